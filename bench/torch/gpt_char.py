"""PyTorch twin of dgm's GPT training step (bench/gpt_step): nanoGPT's model.py (Karpathy), as dgm builds it.

Model (crates/dgm/src/models/autoregressive/gpt.rs, crates/dgm/src/nn/transformer.rs): a decoder-only
transformer (Radford et al. 2019; Vaswani et al. 2017) with learned position embeddings, pre-LayerNorm blocks
(eps 1e-5, with biases), causal multi-head self-attention (F.scaled_dot_product_attention, is_causal=True),
an MLP C -> 4C -> C with the exact (erf) GELU, a final LayerNorm, and an output head tied to the token
embedding. dgm's vocabulary has one extra id, BOS ("start of text"), used only as an input: the embedding has
V + 1 rows and the logits cover the first V. A batch x (b, T) of token ids is fed as [BOS, x_0 .. x_{T-2}]
and the targets are x_0 .. x_{T-1}; the loss is the mean cross-entropy per token (nats), as nanoGPT logs it.

Variable names are nanoGPT's (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...), minus the
lm_head alias, so dgm's dumped weights load with load_state_dict(strict=True).

One step (the nanoGPT CPU config: 4 layers, 4 heads, width 128, context 64, batch 12, dropout 0, vocab 65 + BOS):
forward, loss, backward, gradient clipping at global norm 1, AdamW (lr 1e-3, betas (0.9, 0.99), eps 1e-8,
weight decay 0.1 on matrices and embeddings only, as nanoGPT), on one fixed batch of random tokens,
float32, CPU, eager mode (nanoGPT's `--compile=False` CPU recipe). Prints one JSON line with the median and
quartiles in milliseconds.

usage: python bench/torch/gpt_char.py [STEPS] [BATCH]           (threads: DGM_BENCH_THREADS, default 2)
       python bench/torch/gpt_char.py --check DIR               (compare with `gpt_step --dump DIR`)
"""
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

N_LAYER, N_HEAD, N_EMBD, BLOCK, VOCAB = 4, 4, 128, 64, 65


class LayerNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.c_proj = nn.Linear(N_EMBD, N_EMBD)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(N_EMBD, dim=2)
        q = q.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2)  # (b, nh, t, hs)
        k = k.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2)
        v = v.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(N_EMBD, 4 * N_EMBD)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * N_EMBD, N_EMBD)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = LayerNorm(N_EMBD)
        self.attn = CausalSelfAttention()
        self.ln_2 = LayerNorm(N_EMBD)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(VOCAB + 1, N_EMBD),  # the last row is BOS
            wpe=nn.Embedding(BLOCK, N_EMBD),
            h=nn.ModuleList([Block() for _ in range(N_LAYER)]),
            ln_f=LayerNorm(N_EMBD),
        ))
        # nanoGPT's init: N(0, 0.02) weights, zero biases, residual projections N(0, 0.02 / sqrt(2 n_layer))
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * N_LAYER))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, x):
        """x (b, T) token ids -> mean cross-entropy per token of x given [BOS, x_0 .. x_{T-2}]."""
        logits = self.logits(x)
        return F.cross_entropy(logits.reshape(-1, VOCAB), x.reshape(-1))

    def logits(self, x):
        """x (b, T) token ids -> logits (b, T, V) of x_t given [BOS, x_0 .. x_{t-1}]."""
        b, t = x.shape
        bos = torch.full((b, 1), VOCAB, dtype=x.dtype)
        inp = torch.cat([bos, x[:, :-1]], 1)
        pos = torch.arange(t)
        h = self.transformer.wte(inp) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            h = block(h)
        h = self.transformer.ln_f(h)
        return h @ self.transformer.wte.weight[:VOCAB].t()  # tied head, real vocabulary only


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def read_safetensors(path):
    """A safetensors file (f32 and u32 tensors) as a dict of torch tensors, without the safetensors package."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dtype = {"F32": torch.float32, "U32": torch.int32}[meta["dtype"]]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=dtype).reshape(meta["shape"]).clone()
        out[name] = t.long() if dtype == torch.int32 else t
    return out


def check(dir):
    """Loads dgm's weights (strict names and shapes), runs dgm's input batch, compares loss and logits."""
    tensors = read_safetensors(os.path.join(dir, "gpt.safetensors"))
    x = tensors.pop("__x")
    loss_dgm = tensors.pop("__loss").item()
    logits_dgm = tensors.pop("__logits").double()
    model = GPT()
    model.load_state_dict(tensors, strict=True)
    with torch.no_grad():
        loss32 = model(x).item()
        model = model.double()
        loss64 = model(x).item()
        logits_err = (model.logits(x) - logits_dgm).abs().max().item()
    err = abs(loss_dgm - loss64)
    ok = err <= 1e-5 * max(1.0, abs(loss64)) and logits_err <= 1e-4 * max(1.0, logits_dgm.abs().max().item())
    print(json.dumps({"impl": "pytorch " + torch.__version__, "check": "ok" if ok else "MISMATCH",
                      "params": num_params(model), "loss_dgm": loss_dgm, "loss_torch": loss32,
                      "loss_torch_f64": loss64, "abs_err": err, "logits_max_abs_err": logits_err,
                      "logits_max_abs": logits_dgm.abs().max().item()}))
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        check(sys.argv[2])
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    bs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]  # nanoGPT: decay matrices and embeddings only
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
    x = torch.randint(0, VOCAB, (bs, BLOCK))  # one fixed batch of random tokens
    times = []
    warmup = 10
    for s in range(steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[math.floor((len(times) - 1) * p + 0.5)]  # round half away from zero, as Rust's f64::round
    print(json.dumps({"impl": "pytorch " + torch.__version__, "steps": steps, "batch": bs, "block": BLOCK,
                      "median_ms": round(q(0.5), 3), "q1_ms": round(q(0.25), 3), "q3_ms": round(q(0.75), 3),
                      "params": num_params(model), "loss": round(loss.item(), 4),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
