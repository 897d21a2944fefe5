#!/usr/bin/env python3
"""Write a copy of a Hugging Face model folder with its float tensors in bfloat16 (round to
nearest even), as most checkpoints on the Hub are published: the input of tramway's frozen
16-bit weights (LoRA keeps a bf16 base at 2 bytes per parameter on the GPU).

    $(bash tools/setup-torch.sh) tools/cast_bf16.py models/SmolLM2-135M-Instruct models/SmolLM2-135M-Instruct-bf16

(any python3 with numpy and safetensors; the torch venv has both)

Pure numpy (no torch): reads model.safetensors, writes the safetensors format by hand (an
8-byte header length, the JSON header, the little-endian data); every other file is copied.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
from safetensors.numpy import load_file


def to_bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    # round to nearest, ties to even; NaN stays NaN
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(a), np.uint16(0x7FC0), r)


def main(src, dst):
    os.makedirs(dst + ".tmp", exist_ok=True)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        if a.dtype.kind == "f":
            data, dtype = to_bf16_bits(a).tobytes(), "BF16"
        else:
            data, dtype = np.ascontiguousarray(a).tobytes(), {"i": "I64", "u": "U8"}.get(a.dtype.kind, "I64")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(dst + ".tmp", "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    for f in os.listdir(src):
        if f != "model.safetensors" and os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst + ".tmp", f))
    cfg = os.path.join(dst + ".tmp", "config.json")
    if os.path.exists(cfg):
        with open(cfg) as f:
            c = json.load(f)
        c["torch_dtype"] = "bfloat16"
        with open(cfg, "w") as f:
            json.dump(c, f, indent=2)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.rename(dst + ".tmp", dst)
    print(f"{dst}: {len(tensors)} tensors in bfloat16")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
