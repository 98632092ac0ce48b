#!/usr/bin/env python3
"""Loads the adapters written by `cargo run --example peft_export -- <dir>` with the real
PEFT library and compares its outputs with the crate's.

For each case directory: builds the PyTorch MLP from base.safetensors, loads the adapter
with PeftModel.from_pretrained with every warning turned into an error (a missing or
unexpected key is a warning in PEFT), and compares PEFT's output on io.safetensors' "x"
with the crate's "y". Prints one JSON line per case; exits 1 if any case fails.
Needs torch, peft and safetensors; not run by CI (scripts/peft-roundtrip.sh runs it).
"""
import json
import pathlib
import sys
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file

TOLERANCE = 1e-5


def check(case_dir):
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 5)
    ).float()
    model.load_state_dict(load_file(case_dir / "base.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peft_model = PeftModel.from_pretrained(model, case_dir)
    peft_model.eval()
    io = load_file(case_dir / "io.safetensors")
    with torch.no_grad():
        y = peft_model(io["x"])
    gap = float((y - io["y"]).abs().max() / io["y"].abs().max())
    lora_layers = sum(1 for n, _ in peft_model.named_modules() if n.endswith("lora_A.default"))
    ranks = {n.split(".")[2]: m.r["default"] for n, m in peft_model.named_modules()
             if hasattr(m, "r") and isinstance(m.r, dict) and "default" in m.r}
    return {"case": case_dir.name, "lora_layers": lora_layers, "ranks": ranks,
            "relative_gap": gap, "ok": gap <= TOLERANCE and lora_layers == 3}


def main():
    root = pathlib.Path(sys.argv[1])
    results = [check(d) for d in sorted(root.iterdir()) if (d / "adapter_config.json").exists()]
    for r in results:
        print(json.dumps(r))
    sys.exit(0 if results and all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
