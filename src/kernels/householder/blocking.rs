//! How the sweeps sum over rows.

/// Rows summed into a partial before it joins the running total: sums of `n` terms then
/// carry about `(sqrt(SUM_BLOCK) + sqrt(n / SUM_BLOCK)) eps` relative error, not `sqrt(n) eps`.
pub const SUM_BLOCK: usize = 32;
