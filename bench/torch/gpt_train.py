"""PyTorch twin of `dgm train gpt` on tinyshakespeare (bench/gpt_shakespeare): the same model, data, schedule
and evaluation, so wall-clock times and validation losses can be put side by side.

Model: bench/torch/gpt_char.py's GPT (dgm's GPT: nanoGPT's model.py with a BOS input token), resized here.
Data: tinyshakespeare as characters (the corpus's 65 distinct bytes, sorted); train = the first 90 % of the
bytes, validation = the last 10 % (nanoGPT's shakespeare_char split). A training batch is `batch` windows of
`context` tokens at uniformly random offsets of the training split (dgm draws them as a seeded permutation of
all offsets; the distributions are the same). Validation, like dgm's trainer: the mean per-token loss over the
first `eval_batches` × `batch` non-overlapping windows of the validation split; at the end, over all of them.
Optimiser: AdamW (betas 0.9/0.99, eps 1e-8), weight decay only on ≥ 2-D parameters (nanoGPT), global-norm
clipping at 1, learning rate as dgm's `lr_at`: linear warm-up (lr·(s+1)/warmup), then cosine decay to
lr·min_ratio at the last step. float32, eager mode, torch.set_num_threads(threads).

Prints one JSON line per evaluation: {"step", "val_loss", "train_s"} (train_s excludes evaluation time),
and a final {"final_val_loss", "train_s", "steps"}.

usage: python bench/torch/gpt_train.py CORPUS [--layers 4 --heads 4 --width 128 --context 64 --batch 12
       --steps 2000 --lr 1e-3 --warmup 100 --min-ratio 0.1 --eval-every 100 --eval-batches 20 --dropout 0
       --threads 2 --seed 0 --time-limit SECONDS]
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_char  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=0.0, help="stop training after this many seconds")
    a = ap.parse_args()
    if a.dropout != 0.0:
        sys.exit("gpt_char's model has no dropout; use --dropout 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    data = open(a.corpus, "rb").read()
    vocab = sorted(set(data))
    table = {b: i for i, b in enumerate(vocab)}
    ids = torch.tensor([table[b] for b in data], dtype=torch.long)
    n_train = len(ids) * 90 // 100
    train, val = ids[:n_train], ids[n_train:]

    gpt_char.N_LAYER, gpt_char.N_HEAD, gpt_char.N_EMBD = a.layers, a.heads, a.width
    gpt_char.BLOCK, gpt_char.VOCAB = a.context, len(vocab)
    model = gpt_char.GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.99), eps=1e-8)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        span = max(a.steps - a.warmup, 1)
        progress = min((step - a.warmup) / span, 1.0)
        return a.lr * (a.min_ratio + (1 - a.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    n_val_windows = len(val) // a.context
    val_windows = val[: n_val_windows * a.context].view(n_val_windows, a.context)

    @torch.no_grad()
    def val_loss(limit):
        model.eval()
        w = val_windows[:limit]
        total, count = 0.0, 0
        for i in range(0, len(w) - a.batch + 1, a.batch):
            total += model(w[i:i + a.batch]).item()
            count += 1
        model.train()
        return total / max(count, 1)

    gen = torch.Generator().manual_seed(a.seed)
    train_s = 0.0
    step = 0
    while step < a.steps:
        t0 = time.perf_counter()
        starts = torch.randint(0, len(train) - a.context + 1, (a.batch,), generator=gen)
        x = torch.stack([train[s:s + a.context] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        train_s += time.perf_counter() - t0
        if a.eval_every and step % a.eval_every == 0:
            v = val_loss(a.eval_batches * a.batch)
            print(json.dumps({"step": step, "val_loss": v, "train_s": train_s, "train_loss": loss.item()}),
                  flush=True)
        if a.time_limit and train_s >= a.time_limit:
            break
    print(json.dumps({"final_val_loss": val_loss(n_val_windows), "train_s": train_s, "steps": step}), flush=True)


if __name__ == "__main__":
    main()
