#!/usr/bin/env bash
# Export direction of the PEFT interchange, checked with the real library: the crate
# trains and exports adapters (examples/peft_export.rs), PEFT loads them with warnings as
# errors and its outputs are compared with the crate's (scripts/peft-roundtrip.py).
# Needs a Python with torch, peft and safetensors: PYTHON=/path/to/python (default
# python3). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
cargo run --release --quiet --example peft_export -- "$out"
"${PYTHON:-python3}" scripts/peft-roundtrip.py "$out"
