"""PyTorch twin of dgm's DDPM UNet training step (bench/unet_step).

The net mirrors crates/dgm/src/nn/unet.rs (+ nn/attention.rs) as built by configs/ddpm-mnist.toml, with
C = base_channels (default 16), channel_mult [1, 2, 2], one ResBlock per level, attention at 7x7 (and in the
middle), 4 heads, GroupNorm with min(8, C) groups (eps 1e-5), 1x28x28 images:

  emb  = SiLU(Linear(4C->4C)(SiLU(Linear(C->4C)(sinusoid(t)))))    sinusoid: freq_i = 10000^(-i/(C/2-1)), [sin, cos]
  h    = Conv3x3(x) -> skip
  down: per level, ResBlock (+ attention at 7x7) -> skip; stride-2 Conv3x3 between levels -> skip
  mid:  ResBlock, attention, ResBlock
  up:   per level (deepest first), 2 x [cat(h, skip.pop()) -> ResBlock (+ attention)]; nearest x2 + Conv3x3
  out  = Conv3x3(SiLU(GroupNorm(h)))
  ResBlock: Conv3x3(SiLU(GN(x))) + Linear(emb)[:, :, None, None] -> Conv3x3(SiLU(GN(.))), + (1x1 conv) skip
  attention: qkv = 1x1 conv(GN(x)), per head softmax(q^T k / sqrt(d)), x + 1x1 conv(out)

Module names equal dgm's variable names, so dgm's weights load with load_state_dict(strict=True).
One step: k ~ U{0..999}, eps ~ N(0, I), x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps (linear beta 1e-4 -> 0.02),
MSE(eps_hat, eps), backward, AdamW (lr 1e-3, no weight decay, no clipping), on one fixed batch of random images
in [-1, 1], float32, CPU. Prints one JSON line with the median and quartiles in milliseconds.

usage: python bench/torch/unet_step.py [STEPS] [BATCH] [BASE]   (threads: DGM_BENCH_THREADS, default 2)
       python bench/torch/unet_step.py --check DIR [BASE]       (compare with `unet_step --dump DIR [BASE]`)
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNEL_MULT = [1, 2, 2]
NUM_RES_BLOCKS = 1
ATTENTION_RESOLUTIONS = [7]
NUM_HEADS = 4
GROUPS = 8
IMAGE = 28
IN_CHANNELS = 1


def timestep_embedding(t, dim):
    """(b,) -> (b, dim): [sin(t*freq), cos(t*freq)], freq_i = exp(-ln(10000) i / (half - 1)), in float32 as dgm."""
    half = dim // 2
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / (half - 1)) for i in range(half)], dtype=torch.float32)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], 1)


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb_dim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-5)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, 1, 0) if c_in != c_out else None

    def forward(self, x, emb):  # emb already through SiLU
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class SelfAttention2d(nn.Module):
    def __init__(self, c, heads, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-5)
        self.qkv = nn.Conv2d(c, 3 * c, 1, 1, 0)
        self.proj = nn.Conv2d(c, c, 1, 1, 0)
        self.heads = heads

    def forward(self, x):
        b, c, h, w = x.shape
        nh, d, n = self.heads, c // self.heads, h * w
        qkv = self.qkv(self.norm(x)).reshape(b, 3, nh * d, n)  # channels [q | k | v], each [head 0 | head 1 | ...]
        q = qkv[:, 0].reshape(b * nh, d, n) * (1.0 / math.sqrt(d))
        k = qkv[:, 1].reshape(b * nh, d, n)
        v = qkv[:, 2].reshape(b * nh, d, n)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (b*H, n, n)
        out = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)  # (b*H, d, n) -> (b, c, h, w)
        return x + self.proj(out)


class Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()  # nn.Identity where there is no attention (no parameters, as in dgm)


class Mid(nn.Module):
    def __init__(self, c, emb_dim, heads, groups):
        super().__init__()
        self.res1 = ResBlock(c, c, emb_dim, groups)
        self.attn = SelfAttention2d(c, heads, groups)
        self.res2 = ResBlock(c, c, emb_dim, groups)


class UNet(nn.Module):
    def __init__(self, base):
        super().__init__()
        g, e, heads = min(GROUPS, base), 4 * base, NUM_HEADS
        assert base >= 4 and base % 2 == 0 and base % g == 0, f"base_channels {base}: must be even, >= 4"
        self.base = base
        last = len(CHANNEL_MULT) - 1
        attn = lambda s, c: SelfAttention2d(c, heads, g) if s in ATTENTION_RESOLUTIONS else nn.Identity()
        self.time = nn.ModuleDict({"lin1": nn.Linear(base, e), "lin2": nn.Linear(e, e)})
        self.conv_in = nn.Conv2d(IN_CHANNELS, base, 3, 1, 1)
        ch, s = base, IMAGE
        skips = [ch]
        self.down = nn.ModuleList()
        for l, m in enumerate(CHANNEL_MULT):
            level = Level()
            for _ in range(NUM_RES_BLOCKS):
                level.res.append(ResBlock(ch, m * base, e, g))
                ch = m * base
                level.attn.append(attn(s, ch))
                skips.append(ch)
            if l < last:
                skips.append(ch)
                s //= 2
                level.downsample = nn.Conv2d(ch, ch, 3, 2, 1)
            self.down.append(level)
        self.mid = Mid(ch, e, heads, g)
        up = [None] * len(CHANNEL_MULT)
        for l, m in reversed(list(enumerate(CHANNEL_MULT))):
            level = Level()
            for _ in range(NUM_RES_BLOCKS + 1):
                level.res.append(ResBlock(ch + skips.pop(), m * base, e, g))
                ch = m * base
                level.attn.append(attn(s, ch))
            if l > 0:
                s *= 2
                level.upsample = nn.Conv2d(ch, ch, 3, 1, 1)
            up[l] = level
        self.up = nn.ModuleList(up)  # indexed by level, as dgm's names; run deepest first
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-5)
        self.conv_out = nn.Conv2d(ch, IN_CHANNELS, 3, 1, 1)

    def forward(self, x, t):
        temb = timestep_embedding(t, self.base).to(x.dtype)
        emb = F.silu(self.time["lin2"](F.silu(self.time["lin1"](temb))))  # (b, 4C)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
                skips.append(h)
        h = self.mid.res2(self.mid.attn(self.mid.res1(h, emb)), emb)
        for level in reversed(self.up):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, skips.pop()], 1), emb))
            if hasattr(level, "upsample"):
                h = level.upsample(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def read_tensors(dir):
    """The tensors written by `unet_step --dump DIR`: DIR/tensors.txt names and shapes, DIR/tensors.bin f32 LE."""
    with open(os.path.join(dir, "tensors.bin"), "rb") as f:
        flat = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    out, off = {}, 0
    with open(os.path.join(dir, "tensors.txt")) as f:
        for line in f:
            name, *dims = line.split()
            shape = [int(d) for d in dims]
            n = math.prod(shape)
            out[name] = flat[off:off + n].reshape(shape).clone()
            off += n
    assert off == flat.numel(), f"{dir}: {flat.numel() - off} values left over"
    return out


def check(dir, base):
    """Loads dgm's weights (strict: same names and shapes), runs the same input in float64, compares outputs."""
    tensors = read_tensors(dir)
    x, t, out_dgm = tensors.pop("__x"), tensors.pop("__t"), tensors.pop("__out")
    model = UNet(base)
    model.load_state_dict(tensors, strict=True)
    model = model.double()
    with torch.no_grad():
        out = model(x.double(), t)
    err = (out - out_dgm.double()).abs().max().item()
    scale = out.abs().max().item()
    ok = err <= 1e-4 * max(scale, 1.0)
    print(json.dumps({"impl": "pytorch " + torch.__version__, "check": "ok" if ok else "MISMATCH",
                      "params": num_params(model), "max_abs_err": err, "max_abs_out": scale}))
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        check(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 16)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    bs = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    base = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    model = UNet(base)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # linear schedule, T = 1000
    abar = torch.cumprod(1.0 - betas, 0)
    alpha, sigma = abar.sqrt().float(), (1.0 - abar).sqrt().float()
    x0 = torch.rand(bs, IN_CHANNELS, IMAGE, IMAGE) * 2.0 - 1.0  # one fixed batch in [-1, 1]
    times = []
    warmup = 10
    for s in range(steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        k = torch.randint(0, 1000, (bs,))
        eps = torch.randn_like(x0)
        xt = alpha[k].view(-1, 1, 1, 1) * x0 + sigma[k].view(-1, 1, 1, 1) * eps
        loss = F.mse_loss(model(xt, k.float()), eps)
        loss.backward()
        opt.step()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[math.floor((len(times) - 1) * p + 0.5)]  # round half away from zero, as Rust's f64::round
    print(json.dumps({"impl": "pytorch " + torch.__version__, "steps": steps, "batch": bs, "base": base,
                      "median_ms": round(q(0.5), 3), "q1_ms": round(q(0.25), 3), "q3_ms": round(q(0.75), 3),
                      "params": num_params(model), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
