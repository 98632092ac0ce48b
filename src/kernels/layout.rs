//! The row layout of the host's padded matrices: rows padded to a multiple of
//! [`ROW_ALIGN`] elements, so that row kernels run over whole vector registers.

/// Rows are padded to a multiple of this many elements (one AVX2 register of `f32`).
pub const ROW_ALIGN: usize = 8;

/// The padded row length for `cols` columns: `cols` rounded up to [`ROW_ALIGN`] (at least
/// one block).
pub fn padded_stride(cols: usize) -> usize {
    cols.div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
}
