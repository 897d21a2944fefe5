#!/usr/bin/env python3
"""PyTorch peer of examples/bench_step.rs: the same model, batch and optimizers on one CPU thread.

Loads a BERT-family folder (default models/all-MiniLM-L6-v2) as BertForSequenceClassification
with two labels, builds the batch bench_step builds (the same sentence tokenized to SEQ tokens,
BATCH times, labels alternating), then reads method names from stdin, one per line, and answers
each with the seconds one optimizer step took (wall clock, after the step's last kernel):

  adamw      forward + backward + AdamW update
  sam        forward + backward, ascent rho*g/|g|, forward + backward at the ascended point,
             restore, AdamW update (rho 0.05)
  tram-x     clean forward + backward, a forward on noised input embeddings (sigma 0.1, no grad)
             whose KL to the clean outputs is the radius d, the adaptive ascent
             d*|theta|^2*g/||theta*g||, forward + backward there, restore, AdamW update
  tram-prev  as tram-x with the previous step's parameters as the reference instead of noise

These are tramway's passes for each method (tram.md), so the two engines do the same work.
bench_step starts this once and interleaves its steps with tramway's in one run.

  python tools/torch_step.py [MODEL_DIR] [--batch 8] [--seq 24]
Needs torch and transformers (tools/setup-torch.sh makes a venv with both).
"""
import argparse
import os
import sys
import time

# One thread everywhere: PyTorch's intra-op pool and the BLAS it calls (OpenBLAS on Debian).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

TEXT = ("the film is a long and careful study of memory, loss and the small habits that keep a family "
        "together through the years")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=24)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(a.model)
    enc = tok([TEXT] * a.batch, truncation=True, max_length=a.seq, padding="longest", return_tensors="pt")
    labels = torch.tensor([i % 2 for i in range(a.batch)])
    models, opts, prev = {}, {}, {}
    for name in ("adamw", "sam", "tram-x", "tram-prev"):
        m = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
        m.config.hidden_dropout_prob = 0.0
        m.train()
        models[name] = m
        opts[name] = torch.optim.AdamW(m.parameters(), lr=1e-5, weight_decay=0.0)
        prev[name] = [p.detach().clone() for p in m.parameters()]

    def loss_logits(m, embeds=None):
        if embeds is None:
            out = m(**enc, labels=labels)
        else:
            out = m(inputs_embeds=embeds, attention_mask=enc["attention_mask"],
                    token_type_ids=enc.get("token_type_ids"), labels=labels)
        return out.loss, out.logits

    def kl(p_logits, q_logits):  # mean over rows of KL(p || q)
        lp, lq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
        return (lp.exp() * (lp - lq)).sum(-1).mean()

    def clip_(params, max_norm=1.0):
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def ascend_and_descend(m, opt, eps):
        params = [p for p in m.parameters()]
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.add_(e)
        opt.zero_grad(set_to_none=False)
        loss, _ = loss_logits(m)
        loss.backward()
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.sub_(e)
        clip_(params)
        opt.step()

    def step(name):
        m, opt = models[name], opts[name]
        params = [p for p in m.parameters()]
        opt.zero_grad(set_to_none=False)
        if name == "adamw":
            loss, _ = loss_logits(m)
            loss.backward()
            clip_(params)
            opt.step()
            return
        loss, logits = loss_logits(m)
        loss.backward()
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        if name == "sam":
            norm = torch.sqrt(sum((g * g).sum() for g in grads)) + 1e-12
            eps = [0.05 * g / norm for g in grads]
        else:
            with torch.no_grad():
                if name == "tram-x":
                    emb = m.bert.embeddings.word_embeddings(enc["input_ids"])
                    ref = loss_logits(m, emb + 0.1 * torch.randn_like(emb))[1]
                else:
                    now = [p.detach().clone() for p in params]
                    for p, q in zip(params, prev[name]):
                        p.copy_(q)
                    ref = loss_logits(m)[1]
                    for p, q in zip(params, now):
                        p.copy_(q)
                    prev[name] = now
                d = kl(logits.detach(), ref)
                scaled = [p.detach() * g for p, g in zip(params, grads)]
                norm = torch.sqrt(sum((s * s).sum() for s in scaled)) + 1e-12
                eps = [d * p.detach() * s / norm for p, s in zip(params, scaled)]
        ascend_and_descend(m, opt, eps)

    for name in models:  # warm-up, not reported
        step(name)
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name not in models:
            print(f"error unknown method {name}", flush=True)
            continue
        t0 = time.perf_counter()
        step(name)
        print(f"{time.perf_counter() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
