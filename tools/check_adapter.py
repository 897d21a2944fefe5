#!/usr/bin/env python3
"""Check that Hugging Face PEFT loads a LoRA adapter folder written by tramway
(`tramway finetune --lora-rank ...`'s final/) onto its base model and computes tramway's
logits, and that `transformers` loads the merged folder (`--merge`'s final-merged/) with the
same logits.

    $(bash tools/setup-torch.sh) tools/check_adapter.py BASE_DIR ADAPTER_DIR [MERGED_DIR]

Needs pip peft==0.10.0 and accelerate==0.29.3 in the venv (tools/setup-torch.sh installs them).
Tolerance: max |logits difference| within 1e-4 of the largest |logit| (f32 on both sides, a
different summation order).
"""
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TEXT = ("Shares in the company rose sharply after it reported a rise in quarterly profits, "
        "helped by strong demand in Asia and lower costs.")


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        return 2
    base, adapter = sys.argv[1], sys.argv[2]
    merged = sys.argv[3] if len(sys.argv) == 4 else None
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    ids = tok.encode(TEXT, add_special_tokens=False).ids[:64]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.safetensors")
        subprocess.run(["cargo", "run", "-q", "--release", "--example", "lora_logits", "--", base, adapter,
                        ",".join(map(str, ids)), out], check=True, cwd=ROOT)
        ours = load_file(out)["logits"]
    x = torch.tensor([ids])
    ok = True
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32), adapter).eval()
    with torch.no_grad():
        theirs = model(input_ids=x).logits
    scale = theirs.abs().max().item()
    err = (theirs - ours).abs().max().item() / scale
    print(f"PEFT loaded {adapter} onto {base}: max |logits diff| {err:.2e} of the largest logit over {len(ids)} tokens")
    ok &= err < 1e-4
    if merged:
        m = AutoModelForCausalLM.from_pretrained(merged, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            ml = m(input_ids=x).logits
        err = (ml - ours).abs().max().item() / scale
        print(f"transformers loaded the merged folder {merged}: max |logits diff| {err:.2e}")
        ok &= err < 1e-4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
