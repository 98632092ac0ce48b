#!/usr/bin/env python3
"""Writes small PEFT LoRA adapters with the real library into tests/fixtures/peft/.

Needs torch, peft and safetensors (`pip install torch peft safetensors`); not run by CI.
The tests in tests/peft_fixtures.rs import these directories and compare the crate's
outputs with the ones PEFT computed here.

Layout:
  base.safetensors   the base model nn.Sequential(Linear(6, 8), ReLU, Linear(8, 8), ReLU,
                     Linear(8, 5)), keys "<i>.weight" / "<i>.bias", float32
  <case>/            what PeftModel.save_pretrained writes, plus io.safetensors holding
                     the input "x" [3, 6] and PEFT's output "y" [3, 5]

Cases:
  default   r 4, alpha 8, target_modules ["0", "2", "4"], PEFT's own init (lora_B = 0)
  trained   r 4, alpha 8, target_modules as a regular expression, random factors
  rslora    r 4, alpha 8, use_rslora, random factors
  ranks     r 4 with rank_pattern {"0": 2, "4": 3} and alpha_pattern {"2": 16}, random
            factors
"""
import copy
import json
import pathlib
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/peft")


def base_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 5)
    ).float()


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    base = base_model()
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, OUT / "base.safetensors")
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    cases = {
        "default": (LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2", "4"]), None),
        "trained": (LoraConfig(r=4, lora_alpha=8, target_modules=r"[024]"), 2),
        "rslora": (LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2", "4"],
                              use_rslora=True), 3),
        "ranks": (LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2", "4"],
                             rank_pattern={"0": 2, "4": 3}, alpha_pattern={"2": 16}), 4),
    }
    summary = {}
    for name, (config, seed) in cases.items():
        model = get_peft_model(copy.deepcopy(base), config)
        if seed is not None:
            randomize(model, seed)
        model.eval()
        with torch.no_grad():
            y = model(x)
        d = OUT / name
        model.save_pretrained(d)
        (d / "README.md").unlink(missing_ok=True)  # PEFT's model card, not needed here
        save_file({"x": x.contiguous(), "y": y.contiguous()}, d / "io.safetensors")
        summary[name] = float(y.abs().max())
    print(json.dumps({"peft": __import__("peft").__version__, "torch": torch.__version__,
                      "max_abs_output": summary}))


if __name__ == "__main__":
    main()
