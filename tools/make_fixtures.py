#!/usr/bin/env python3
"""Write the PyTorch fixtures that tramway's model tests compare against.

For each tiny random-config model (2 layers, hidden 32, a few heads, small vocabulary, padded
batches) this writes, under tests/fixtures/<name>/:
  - model/            the Hugging Face folder (config.json, model.safetensors), as tramway loads it
  - expected.safetensors
        inputs:  input_ids, attention_mask, token_type_ids (or pixel_values), labels
        outputs: logits, loss
        grad.<hf tensor name> for every parameter (the gradient of the mean loss)

Dropout is 0 so the numbers are deterministic. Run it with Debian's python3-torch (1.13) and
pip transformers==4.40.2:
    /usr/bin/python3 tools/make_fixtures.py
The files are small (tens of kB) and committed; CI never needs torch.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
import transformers
from transformers import (BertConfig, BertForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification, ViTConfig, ViTForImageClassification)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def text_batch(vocab, pad_id, batch=3, seq=7, seed=0, first=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    lengths = [seq, seq - 2, 3][:batch]
    for b, n in enumerate(lengths):
        mask[b, n:] = 0
        ids[b, n:] = pad_id
        if first is not None:
            ids[b, 0] = first
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, 4:] = 1
    types = types * mask
    return ids, mask, types


def save(name, model, inputs, labels):
    out_dir = os.path.join(ROOT, name)
    model.save_pretrained(os.path.join(out_dir, "model"), safe_serialization=True)
    model.train()  # dropout is 0: train and eval agree; gradients need train mode semantics
    model.zero_grad()
    out = model(**inputs, labels=labels)
    out.loss.backward()
    tensors = {k: v.to(torch.int32).contiguous() for k, v in inputs.items() if v.dtype == torch.long}
    tensors.update({k: v.contiguous() for k, v in inputs.items() if v.dtype != torch.long})
    tensors["labels"] = labels.to(torch.int32)
    tensors["logits"] = out.logits.detach().contiguous()
    tensors["loss"] = out.loss.detach().reshape(1)
    missing = []
    for n, p in model.named_parameters():
        if p.grad is None:
            missing.append(n)
            continue
        tensors["grad." + n] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(out_dir, "expected.safetensors"))
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "no_grad": missing}
    with open(os.path.join(out_dir, "versions.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: loss {out.loss.item():.6f}, {len(tensors)} tensors, params without grad: {missing}")


def bert():
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
                     layer_norm_eps=1e-12)
    model = BertForSequenceClassification(cfg)
    # Larger-than-init weights so gradients are not tiny and every path matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids, mask, types = text_batch(99, 0, first=2)
    labels = torch.tensor([0, 2, 1])
    save("bert", model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, labels)


def roberta():
    torch.manual_seed(2)
    cfg = RobertaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=20, type_vocab_size=1,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
                        layer_norm_eps=1e-5)
    model = RobertaForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids, mask, _ = text_batch(97, 1, first=0, seed=5)
    labels = torch.tensor([1, 0, 1])
    save("roberta", model, {"input_ids": ids, "attention_mask": mask}, labels)


def vit():
    torch.manual_seed(3)
    cfg = ViTConfig(image_size=12, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, num_labels=3, layer_norm_eps=1e-12)
    model = ViTForImageClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(7)
    pixels = torch.randn(2, 3, 12, 12, generator=g)
    labels = torch.tensor([2, 0])
    save("vit", model, {"pixel_values": pixels}, labels)


SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "Stock markets fell sharply on Monday.",
    "The quick brown fox jumps over the lazy dog!",
    "tramway fine-tunes transformers on any GPU.",
]


def minilm():
    """Sentence embeddings of the real all-MiniLM-L6-v2 (models/fetch.sh minilm): mean pooling
    over real tokens and L2 normalisation, as sentence-transformers does."""
    from transformers import AutoModel, AutoTokenizer
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    out = [{"text": t, "tokens": int(n), "embedding": [round(float(x), 7) for x in e]}
           for t, n, e in zip(SENTENCES, enc["attention_mask"].sum(1), emb)]
    path = os.path.join(ROOT, "minilm_embeddings.json")
    with open(path, "w") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "max_length": 128, "pooling": "mean", "normalize": True,
                   "torch": torch.__version__, "transformers": transformers.__version__, "sentences": out}, f)
    print(f"minilm: {len(out)} sentence embeddings -> {path}")


if __name__ == "__main__":
    which = sys.argv[1:] or ["bert", "roberta", "vit", "minilm"]
    for w in which:
        globals()[w]()
