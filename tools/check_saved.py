#!/usr/bin/env python3
"""Check that PyTorch `transformers` loads a folder saved by tramway and computes the same
logits as the original: resaves each fixture model through tramway (examples/resave.rs), loads
the result with AutoModelForSequenceClassification and compares with expected.safetensors.

    /usr/bin/python3 tools/check_saved.py
"""
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ok = True
for name in ["bert", "roberta"]:
    fx = os.path.join(ROOT, "tests", "fixtures", name)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["cargo", "run", "-q", "--example", "resave", "--", os.path.join(fx, "model"), out],
                       check=True, cwd=ROOT)
        model = AutoModelForSequenceClassification.from_pretrained(out).eval()
        exp = load_file(os.path.join(fx, "expected.safetensors"))
        inputs = {k: exp[k].long() for k in ["input_ids", "attention_mask", "token_type_ids"] if k in exp}
        with torch.no_grad():
            logits = model(**inputs).logits
        err = (logits - exp["logits"]).abs().max().item()
        print(f"{name}: transformers loaded the tramway-saved folder ({type(model).__name__}); max |logits diff| {err:.2e}")
        ok &= err < 1e-5
sys.exit(0 if ok else 1)
