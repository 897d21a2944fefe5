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
pip transformers==4.40.2 (tools/setup-torch.sh makes that venv and prints its python):
    $(bash tools/setup-torch.sh) tools/make_fixtures.py [NAME ...]
The files are small (tens of kB) and committed; CI never needs torch.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
import transformers
from transformers import (BertConfig, BertForSequenceClassification, Dinov2Config, Dinov2ForImageClassification,
                          RobertaConfig, RobertaForSequenceClassification, ViTConfig, ViTForImageClassification)

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


def gpt2():
    """GPT2LMHeadModel (Conv1D weights, learned positions, pre-LayerNorm, GELU-tanh, causal
    attention, LM head tied to wte) on a right-padded batch; labels are the inputs with -100 on
    padding, which Hugging Face shifts inside the loss."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(3)
    # vocab 150 x n_embd 32: wte (19.2 kB) is larger than the logits of the 3 x 9 batch (16.2 kB),
    # so a 16 KiB binding limit splits wte while every other tensor fits (the split-head test).
    cfg = GPT2Config(vocab_size=150, n_positions=24, n_embd=32, n_layer=2, n_head=4, n_inner=None,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                     activation_function="gelu_new", bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids, mask, _ = text_batch(150, 0, batch=3, seq=9, seed=7)
    labels = ids.masked_fill(mask == 0, -100)
    save("gpt2", model, {"input_ids": ids, "attention_mask": mask}, labels)


def save_lm(name, model, seed):
    """A causal LM fixture: weights perturbed past their init (so every path matters), the
    right-padded batch of `seed`, labels = inputs with -100 on padding (shifted inside the loss)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids, mask, _ = text_batch(150, 0, batch=3, seq=9, seed=seed)
    labels = ids.masked_fill(mask == 0, -100)
    save(name, model, {"input_ids": ids, "attention_mask": mask}, labels)


def llama():
    """LlamaForCausalLM with grouped-query attention (4 query heads sharing 2 K/V heads), RoPE
    with a non-default base, SwiGLU, RMSNorm and an untied head; then the same with a tied head
    (llama_tied). Same right-padded batch and shifted-label loss as gpt2."""
    from transformers import LlamaConfig, LlamaForCausalLM
    for name, tied, seed in (("llama", False, 4), ("llama_tied", True, 5)):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=150, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                          rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=tied,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(cfg)
        save_lm(name, model, seed)


def qwen2():
    """Qwen2ForCausalLM: LLaMA's block with biases on the Q, K and V projections (none on the
    output projection), grouped-query attention (4 query heads sharing 2 K/V heads), RoPE with
    Qwen's large base, an untied head (qwen2) and a tied one (qwen2_tied, as the small Qwen2.5
    models). Same right-padded batch and shifted-label loss as llama."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    for name, tied, seed in (("qwen2", False, 8), ("qwen2_tied", True, 9)):
        torch.manual_seed(seed)
        cfg = Qwen2Config(vocab_size=150, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=tied,
                          use_sliding_window=False, bos_token_id=1, eos_token_id=2)
        model = Qwen2ForCausalLM(cfg)
        save_lm(name, model, seed)


PPL_TEXT = (
    "The tramway opened in 1902 and ran from the harbour to the market square. Within ten years it had "
    "grown to four lines, and by 1925 the city carried more than thirty thousand passengers a day. "
    "After the war, buses replaced most of the network, but the harbour line survived, and in 2011 the "
    "council voted to extend it along the river to the new university campus."
)
CHAT_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
               "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def smollm2():
    """SmolLM2-135M-Instruct as converted by models/fetch.sh smollm2: the perplexity of a
    paragraph cut into independent blocks of 32 tokens (our tokenizer.json, as tramway uses it),
    and the greedy continuation of a chat prompt."""
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "SmolLM2-135M-Instruct")
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(d).eval()
    ids = tok.encode(PPL_TEXT).ids
    block = 32
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), block):
            x = torch.tensor([ids[i:i + block]])
            if x.shape[1] < 2:
                continue
            out = model(input_ids=x, labels=x)
            n = x.shape[1] - 1
            nll += out.loss.item() * n
            count += n
        prompt = tok.encode(CHAT_PROMPT).ids
        gen = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=12, do_sample=False, pad_token_id=2)
    new = gen[0, len(prompt):].tolist()
    out = {"model": "SmolLM2-135M-Instruct (models/fetch.sh smollm2)", "text": PPL_TEXT, "block": block,
           "tokens": len(ids), "predicted": count, "perplexity": math.exp(nll / count),
           "prompt": CHAT_PROMPT, "greedy_ids": new, "greedy_text": tok.decode(new),
           "torch": torch.__version__, "transformers": transformers.__version__}
    path = os.path.join(ROOT, "smollm2_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"smollm2: perplexity {out['perplexity']:.4f} over {count} predicted tokens; greedy {out['greedy_text']!r}")


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


def dinov2():
    """DINOv2 with LayerScale, fed 12x12 images while its positions were trained for 16x16, so
    the bicubic position interpolation (and its gradient) is exercised."""
    torch.manual_seed(4)
    cfg = Dinov2Config(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, mlp_ratio=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       drop_path_rate=0.0, layerscale_value=0.5, num_labels=3, layer_norm_eps=1e-6)
    model = Dinov2ForImageClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(8)
    pixels = torch.randn(2, 3, 12, 12, generator=g)
    labels = torch.tensor([1, 2])
    save("dinov2", model, {"pixel_values": pixels}, labels)


def dinov2_real():
    """CLS features (Dinov2Model pooler_output) of the real DINOv2 ViT-S/14 (models/fetch.sh dinov2)
    on a fixed synthetic 224x224 image, preprocessed by rescale + normalise only (no resize)."""
    import numpy as np
    from PIL import Image
    from transformers import Dinov2Model
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "dinov2-small")
    y, x = np.mgrid[0:224, 0:224].astype(np.float32)
    img = np.stack([
        127 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0),
        127 + 100 * np.cos((x + y) / 31.0),
        np.where((x - 112) ** 2 + (y - 100) ** 2 < 60 ** 2, 220.0, 40.0),
    ], axis=-1).round().clip(0, 255).astype(np.uint8)
    path = os.path.join(ROOT, "dinov2_image.png")
    Image.fromarray(img).save(path, optimize=True)
    px = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    px = ((px * np.float32(1 / 255) - mean) / std).unsqueeze(0)
    model = Dinov2Model.from_pretrained(d).eval()
    with torch.no_grad():
        feat = model(pixel_values=px).pooler_output[0]
    with open(os.path.join(ROOT, "dinov2_features.json"), "w") as f:
        json.dump({"model": "dinov2-small", "image": "dinov2_image.png", "embedding": [round(float(v), 7) for v in feat],
                   "torch": torch.__version__, "transformers": transformers.__version__}, f)
    print(f"dinov2_real: {path}, {feat.shape[0]} features")


SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "Stock markets fell sharply on Monday.",
    "The quick brown fox jumps over the lazy dog!",
    "tramway fine-tunes transformers on any GPU.",
]


# multilingual-e5 expects a "query: " or "passage: " prefix.
E5_SENTENCES = [
    "query: how much protein should a female eat",
    "query: Wie viel Protein sollte eine Frau essen?",
    "query: ¿Cuánta proteína debe comer una mujer?",
    "query: Ce livre est vraiment magnifique, je le recommande.",
    "query: Dit boek is echt prachtig, een aanrader.",
    "query: 今天天气很好，我们去公园散步吧。",
    "query: Ｆｕｌｌｗｉｄｔｈ  text   with  spaces",
]


def minilm():
    """Sentence embeddings of the real all-MiniLM-L6-v2 (models/fetch.sh minilm): mean pooling
    over real tokens and L2 normalisation, as sentence-transformers does."""
    sentence_embeddings("all-MiniLM-L6-v2", SENTENCES, "minilm_embeddings.json")


def e5():
    """The same for multilingual-e5-small as converted by models/fetch.sh e5 (the Q4_0 weights
    dequantized; the reference is PyTorch on the converted folder, so it checks tramway's engine,
    tokenizer and split 250k-row embedding table, not the conversion)."""
    sentence_embeddings("multilingual-e5-small", E5_SENTENCES, "e5_embeddings.json")


def sentence_embeddings(name, sentences, fixture):
    from transformers import AutoModel, AutoTokenizer
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", name)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d, add_pooling_layer=False).eval()
    SENTENCES = sentences
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    out = [{"text": t, "tokens": int(n), "embedding": [round(float(x), 7) for x in e]}
           for t, n, e in zip(SENTENCES, enc["attention_mask"].sum(1), emb)]
    path = os.path.join(ROOT, fixture)
    with open(path, "w") as f:
        json.dump({"model": name, "max_length": 128, "pooling": "mean", "normalize": True,
                   "torch": torch.__version__, "transformers": transformers.__version__, "sentences": out}, f)
    print(f"{name}: {len(out)} sentence embeddings -> {path}")


# ---------------------------------------------------------------------------------------------
# One optimizer step of every method, written from the formulas of ../shared/docs/tram.md, on
# the tiny BERT fixture with SGD (lr 0.1, no momentum) as the base so that the step exposes the
# final gradient directly. Noise is uniform and drawn from tramway's Philox stream, so both
# sides inject the same z. Dropout is 0.

MASK = 0xFFFFFFFF


def philox(block, seed, offset):
    c = [block, offset & MASK, offset >> 32, 0]
    k = [seed & MASK, seed >> 32]
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
        k = [(k[0] + 0x9E3779B9) & MASK, (k[1] + 0xBB67AE85) & MASK]
    return c


def uniform_noise(shape, std, seed, offset):
    """tramway's `rng::uniform(out, key, -std, std)`: element e uses word e % 4 of block e / 4."""
    import numpy as np
    n = int(np.prod(shape))
    words = [philox(e // 4, seed, offset)[e % 4] for e in range(n)]
    u = np.array([(w >> 8) for w in words], dtype=np.float32) * np.float32(1.0 / 16777216.0)
    lo, hi = np.float32(-std), np.float32(std)
    return torch.from_numpy((lo + (hi - lo) * u).astype(np.float32)).reshape(shape)


NOISE_SEED = 1 ^ 0x7A3D000000000000  # OptimConfig.seed = 1


def optim_steps():
    import copy
    import torch.nn.functional as F
    fx = os.path.join(ROOT, "bert")
    from safetensors.torch import load_file
    exp = load_file(os.path.join(fx, "expected.safetensors"))
    base = BertForSequenceClassification.from_pretrained(os.path.join(fx, "model"))
    base.train()
    ids, mask, types = exp["input_ids"].long(), exp["attention_mask"].long(), exp["token_type_ids"].long()
    labels = exp["labels"].long()
    B, T = ids.shape
    H = base.config.hidden_size
    lr = 0.1

    def run(model, z=None, detach=True):
        kw = dict(attention_mask=mask, token_type_ids=types)
        if z is None:
            out = model(input_ids=ids, **kw)
        else:
            emb = model.bert.embeddings.word_embeddings(ids)
            # R3F's noised branch and TRAM-x's reference see detached embeddings; TRAM-Fisher's
            # first pass differentiates through the embedding table (the noise is just added).
            emb = (emb.detach() if detach else emb) + z.reshape(B, T, H)
            out = model(inputs_embeds=emb, **kw)
        loss = F.cross_entropy(out.logits, labels)
        return out.logits, loss

    def params(m):
        return [p for _, p in m.named_parameters()]

    def grads_at(model, z=None):
        model.zero_grad()
        logits, loss = run(model, z, detach=False)
        loss.backward()
        return [p.grad.detach().clone() for p in params(model)], logits.detach(), loss.detach()

    def kl_forward(p_logits, q_logits):  # KL(p || q) per row, mean over rows
        lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
        return (lp.exp() * (lp - lq)).sum(-1).mean()

    def ascent(model, g, mode, eta, radius):
        ws = [p.detach() for p in params(model)]
        if mode == "sam":
            a = [torch.ones_like(w) for w in ws]
        elif mode == "adaptive":
            a = [(w.abs() + eta) ** 2 for w in ws]
        else:  # fisher
            a = [1.0 / (1.0 + eta * gi * gi) for gi in g]
        denom = torch.sqrt(sum((ai * gi * gi).sum() for ai, gi in zip(a, g))) + 1e-12
        eps = [radius * ai * gi / denom for ai, gi in zip(a, g)]
        with torch.no_grad():
            for p, e in zip(params(model), eps):
                p.add_(e)
        return eps

    last = {}

    def sgd(model, g):
        last["g"] = [gi.detach().clone() for gi in g]
        with torch.no_grad():
            for p, gi in zip(params(model), g):
                p.sub_(lr * gi)

    out = {}

    # Recorded per method: the final gradient g~ the base step used (a parameter difference
    # would lose digits to cancellation: lr * g is far below θ's rounding), d for TRAM, and for
    # two-step methods the parameters after the steps (the one-step ones follow from g~).
    def record(name, model, theta0, d=0.0, two_steps=False):
        for (n, p), gi in zip(model.named_parameters(), last["g"]):
            out[f"{name}.grad.{n}"] = gi.contiguous()
            if two_steps:
                out[f"{name}.theta.{n}"] = p.detach().clone().contiguous()
        out[f"{name}.d"] = torch.tensor([float(d)])

    def sharp(name, mode, eta, radius, z1=None):
        m = copy.deepcopy(base)
        theta0 = [p.detach().clone() for p in params(m)]
        g, _, _ = grads_at(m, z1)
        ascent(m, g, mode, eta, radius)
        g2, _, _ = grads_at(m)
        with torch.no_grad():
            for p, t in zip(params(m), theta0):
                p.copy_(t)
        sgd(m, g2)
        record(name, m, theta0)

    m = copy.deepcopy(base)
    theta0 = [p.detach().clone() for p in params(m)]
    g, _, _ = grads_at(m)
    sgd(m, g)
    record("plain", m, theta0)

    sharp("sam", "sam", 0.0, 0.05)
    sharp("asam", "adaptive", 0.01, 0.5)
    sharp("fsam", "fisher", 0.1, 0.1)
    z0 = uniform_noise((B * T, H), 0.1, NOISE_SEED, 0)
    sharp("tram_fisher", "fisher", 0.1, 0.1, z1=z0)

    # TRAM-x: d = KL(p(x + z) || p(x)), adaptive ascent with radius d.
    m = copy.deepcopy(base)
    theta0 = [p.detach().clone() for p in params(m)]
    g, cur, _ = grads_at(m)
    with torch.no_grad():
        ref, _ = run(m, z0)
    d = kl_forward(ref, cur)
    ascent(m, g, "adaptive", 0.0, d)
    g2, _, _ = grads_at(m)
    with torch.no_grad():
        for p, t in zip(params(m), theta0):
            p.copy_(t)
    sgd(m, g2)
    record("tram_x", m, theta0, d)

    # TRAM-θ_{t-1} over two steps: ref starts at θ_0 and becomes θ_t before each base step.
    def tram_theta(name, decay, steps=2):
        m = copy.deepcopy(base)
        theta0 = [p.detach().clone() for p in params(m)]
        ref = copy.deepcopy(base).eval()
        d = 0.0
        for _ in range(steps):
            g, cur, _ = grads_at(m)
            with torch.no_grad():
                r, _ = run(ref)
            d = kl_forward(r, cur)
            told = [p.detach().clone() for p in params(m)]
            ascent(m, g, "adaptive", 0.0, d)
            g2, _, _ = grads_at(m)
            with torch.no_grad():
                for p, t in zip(params(m), told):
                    p.copy_(t)
                for rp, t in zip(params(ref), told):
                    rp.mul_(decay).add_((1 - decay) * t)
            sgd(m, g2)
        record(name, m, theta0, d, two_steps=True)

    tram_theta("tram_prev", 0.0)
    tram_theta("tram_ema", 0.5)

    # R3F: CE(f(x)) + λ KL_sym(f(x + z), f(x)), both branches with gradient, noised one detached.
    m = copy.deepcopy(base)
    theta0 = [p.detach().clone() for p in params(m)]
    m.zero_grad()
    clean, ce = run(m)
    noised, _ = run(m, z0)
    kl = kl_forward(noised, clean) + kl_forward(clean, noised)
    (ce + 0.5 * kl).backward()
    sgd(m, [p.grad for p in params(m)])
    record("r3f", m, theta0)

    # TRPO over two steps: CE + λ KL(p(θ_{t-1}) || p(θ)).
    for name, decay in [("trpo", 0.0), ("mesa", 0.9)]:
        m = copy.deepcopy(base)
        theta0 = [p.detach().clone() for p in params(m)]
        ref = copy.deepcopy(base).eval()
        for _ in range(2):
            m.zero_grad()
            with torch.no_grad():
                r, _ = run(ref)
            cur, ce = run(m)
            (ce + 0.5 * kl_forward(r, cur)).backward()
            told = [p.detach().clone() for p in params(m)]
            with torch.no_grad():
                for rp, t in zip(params(ref), told):
                    rp.mul_(decay).add_((1 - decay) * t)
            sgd(m, [p.grad for p in params(m)])
        record(name, m, theta0, two_steps=True)

    save_file(out, os.path.join(ROOT, "optim_steps.safetensors"))
    print(f"optim_steps: {len(out)} tensors")


def lora():
    """LoRA adapters by Hugging Face PEFT (pip peft==0.10.0, accelerate==0.29.3 in the same venv)
    on the gpt2, llama and bert fixtures' models and batches: lora_gpt2 adapts c_attn, c_proj
    (attention and MLP) and c_fc, r 4, alpha 8; lora_llama q, v, o, gate and down, r 3, alpha 5;
    lora_bert query and value, r 2, alpha 4, with the classifier trained whole (SEQ_CLS's
    modules_to_save). Both A and B are drawn at random (PEFT starts B at zero, which would leave
    A's gradient zero and the logits those of the base). Writes tests/fixtures/lora_<name>/:
      - adapter/             PEFT's save_pretrained (adapter_config.json, adapter_model.safetensors)
      - expected.safetensors the base fixture's inputs, logits, loss, and grad.<name> of every
                             trainable tensor under tramway's names (PEFT's without
                             `base_model.model.`, `.default` and `modules_to_save`)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    runs = [("gpt2", "CAUSAL_LM", ["c_attn", "c_proj", "c_fc"], 4, 8, 11),
            ("llama", "CAUSAL_LM", ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"], 3, 5, 12),
            ("bert", "SEQ_CLS", ["query", "value"], 2, 4, 13)]
    for base, task, targets, r, alpha, seed in runs:
        torch.manual_seed(seed)
        d = os.path.join(ROOT, base)
        cls = AutoModelForCausalLM if task == "CAUSAL_LM" else AutoModelForSequenceClassification
        model = cls.from_pretrained(os.path.join(d, "model"))
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type=task,
                         fan_in_fan_out=base == "gpt2")
        pm = get_peft_model(model, cfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn_like(p) * 0.3)
        inputs = load_file(os.path.join(d, "expected.safetensors"))
        keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if base == "bert" else [])
        feed = {k: inputs[k].to(torch.long) for k in keys}
        labels = inputs["labels"].to(torch.long)
        pm.train()
        pm.zero_grad()
        out = pm(**feed, labels=labels)
        out.loss.backward()
        tensors = {k: inputs[k] for k in keys + ["labels"]}
        tensors["logits"] = out.logits.detach().contiguous()
        tensors["loss"] = out.loss.detach().reshape(1)
        for n, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            name = n.removeprefix("base_model.model.").replace(".default.", ".").replace("modules_to_save.", "")
            tensors["grad." + name] = p.grad.detach().contiguous()
        out_dir = os.path.join(ROOT, "lora_" + base)
        os.makedirs(out_dir, exist_ok=True)
        adapter = os.path.join(out_dir, "adapter")
        os.makedirs(adapter, exist_ok=True)
        with open(os.path.join(adapter, "README.md"), "w") as f:  # PEFT's model card needs Jinja2 otherwise
            f.write("---\n---\nA LoRA test fixture of tramway (tools/make_fixtures.py lora).\n")
        pm.save_pretrained(adapter)
        cfg_path = os.path.join(adapter, "adapter_config.json")
        with open(cfg_path) as f:
            saved = json.load(f)
        saved["base_model_name_or_path"] = f"tests/fixtures/{base}/model"  # not this machine's path
        with open(cfg_path, "w") as f:
            json.dump(saved, f, indent=2, sort_keys=True)
        save_file(tensors, os.path.join(out_dir, "expected.safetensors"))
        import peft
        with open(os.path.join(out_dir, "versions.json"), "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}, f, indent=1)
        n_grads = sum(1 for k in tensors if k.startswith("grad."))
        print(f"lora_{base}: loss {out.loss.item():.6f}, {n_grads} trainable tensors")


if __name__ == "__main__":
    which = sys.argv[1:] or ["bert", "roberta", "gpt2", "llama", "qwen2", "vit", "dinov2", "minilm", "e5", "smollm2", "dinov2_real", "optim_steps", "lora"]
    for w in which:
        globals()[w]()
