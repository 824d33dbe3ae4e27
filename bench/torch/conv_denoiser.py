"""PyTorch twin of dgm's conv-kernel benchmark (crates/dgm/examples/conv_bench.rs, bench/conv_kernels).

The small conv denoiser, batch 128, float32, CPU, input 1x28x28: conv_in 1->64 (3x3); 4 residual blocks at
64 channels, 28x28 (h + conv2(silu(gn2(conv1(silu(gn1(h)))))), GroupNorm with 8 groups, 3x3 pad 1 convs);
down 64->128 (3x3, stride 2) -> 14x14; 2 residual blocks at 128 channels; up = ConvTranspose2d 128->64
(k 4, stride 2, pad 1) -> 28x28, plus the 28x28 features after the four blocks; out = conv 64->1 (3x3) of
silu(gn_out(h)). Loss: MSE(out, clean) for the input clean + 0.5*noise. Training step: zero_grad, forward,
backward, Adam (lr 1e-3, no weight decay).

Modes, each printing one JSON line with the same keys as the dgm side:
  step     median / quartiles (ms) of the training step over STEPS steps after the warm-up
  forward  the same for the forward pass and loss under torch.no_grad()
  ops      median of STEPS repeats of each large layer, forward and backward (the time of .backward() of
           sum(y * r) for a fixed random r, the input requiring grad: input, weight and bias gradients plus
           the backward of the product and the sum, reported on its own as "bwd of sum(y*r) alone"), and a
           2048^2 torch.mm

usage: python bench/torch/conv_denoiser.py <step|forward|ops> [--steps N] [--batch B] [--warmup W]
       (threads: torch.set_num_threads from DGM_BENCH_THREADS, default 2; clean images from MNIST under
       $DGM_DATA/mnist when present, else uniform noise)
"""
import argparse
import gzip
import json
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GROUPS = 8
IMPORT_RSS_MB = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # torch imported, nothing run


class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.gn1 = nn.GroupNorm(GROUPS, ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.gn2 = nn.GroupNorm(GROUPS, ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, h):
        y = self.conv1(self.act(self.gn1(h)))
        y = self.conv2(self.act(self.gn2(y)))
        return h + y


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(1, 64, 3, padding=1)
        self.blocks64 = nn.ModuleList([ResBlock(64) for _ in range(4)])
        self.down = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.blocks128 = nn.ModuleList([ResBlock(128) for _ in range(2)])
        self.up = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1)
        self.gn_out = nn.GroupNorm(GROUPS, 64)
        self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(64, 1, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for b in self.blocks64:
            h = b(h)
        skip = h
        h = self.down(h)
        for b in self.blocks128:
            h = b(h)
        h = self.up(h) + skip
        return self.conv_out(self.act(self.gn_out(h)))


def conv_macs(b, c_in, c_out, k, h, w):
    """MACs of a k x k conv producing (b, c_out, h, w); for a transposed conv pass the input's size."""
    return b * c_in * c_out * k * k * h * w


def forward_flop(b):
    macs = (conv_macs(b, 1, 64, 3, 28, 28) + 8 * conv_macs(b, 64, 64, 3, 28, 28)
            + conv_macs(b, 64, 128, 3, 14, 14) + 4 * conv_macs(b, 128, 128, 3, 14, 14)
            + conv_macs(b, 128, 64, 4, 14, 14) + conv_macs(b, 64, 1, 3, 28, 28))
    return 2.0 * macs


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def quartiles(times):
    times = sorted(times)
    q = lambda p: times[int((len(times) - 1) * p + 0.5)]  # rounds half up, as the Rust side does
    return q(0.5), q(0.25), q(0.75)


def clean_images():
    """(name, (n, 1, 28, 28) float tensor in [0, 1]): MNIST's first 10 000 training images, else noise."""
    d = os.path.join(os.environ.get("DGM_DATA") or "data", "mnist")
    for name, opener in (("train-images-idx3-ubyte.gz", gzip.open), ("train-images-idx3-ubyte", open)):
        path = os.path.join(d, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                raw = f.read()
            px = torch.frombuffer(bytearray(raw[16:16 + 10_000 * 784]), dtype=torch.uint8)
            return "mnist", px.float().div(255.0).reshape(-1, 1, 28, 28)
    return "random", torch.rand(10_000, 1, 28, 28)


def run_model(a):
    bs = a.batch
    data_name, pixels = clean_images()
    model = Denoiser()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if a.mode == "step" else None
    times, parts = [], [0.0, 0.0, 0.0]
    for s in range(a.steps + a.warmup):
        # the batch is drawn outside the timed region (on both sides)
        idx = (torch.arange(bs) + s * bs) % pixels.shape[0]
        clean = pixels[idx]
        x = clean + 0.5 * torch.randn_like(clean)
        t0 = time.perf_counter()
        if opt is None:
            with torch.no_grad():
                F.mse_loss(model(x), clean).item()
            t1 = t2 = time.perf_counter()
        else:
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), clean)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
        t3 = time.perf_counter()
        if s >= a.warmup:
            parts[0] += (t1 - t0) * 1e3
            parts[1] += (t2 - t1) * 1e3
            parts[2] += (t3 - t2) * 1e3
            times.append((t3 - t0) * 1e3)
    med, q1, q3 = quartiles(times)
    gflop = forward_flop(bs) * (3 if a.mode == "step" else 1) / 1e9
    n = a.steps
    return {"impl": "pytorch " + torch.__version__, "mode": a.mode, "data": data_name, "steps": a.steps,
            "batch": bs, "median_ms": round(med, 3), "q1_ms": round(q1, 3), "q3_ms": round(q3, 3),
            "gflop": round(gflop, 3),
            "parts_ms": {"forward": round(parts[0] / n, 3), "backward": round(parts[1] / n, 3),
                         "optimizer": round(parts[2] / n, 3)},
            "peak_rss_mb": peak_rss_mb(), "import_rss_mb": IMPORT_RSS_MB, "params": params,
            "threads": torch.get_num_threads()}


def fwd_bwd(n, shape, layer):
    """Median forward and backward ms of `layer` on an input requiring grad; backward of sum(y * r)."""
    x = torch.randn(shape, requires_grad=True)
    with torch.no_grad():
        r = torch.randn_like(layer(x))
    fwd, bwd = [], []
    for i in range(n + 1):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        t0 = time.perf_counter()
        y = layer(x)
        t1 = time.perf_counter()
        loss = (y * r).sum()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if i > 0:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t3 - t2) * 1e3)
    return quartiles(fwd)[0], quartiles(bwd)[0]


class GnSilu(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.gn = nn.GroupNorm(GROUPS, ch)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.gn(x))


def run_ops(a):
    b, n = a.batch, a.steps
    ops = []

    def push(op, ms, flop):
        ops.append({"op": op, "ms": round(ms, 3), "gflop": None if flop is None else round(flop / 1e9, 3)})

    for name, c_in, c_out, stride, h_in, h_out in (("conv3x3 64->64 28x28", 64, 64, 1, 28, 28),
                                                  ("conv3x3 128->128 14x14", 128, 128, 1, 14, 14),
                                                  ("conv3x3 s2 64->128 28->14", 64, 128, 2, 28, 14)):
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        f, bw = fwd_bwd(n, (b, c_in, h_in, h_in), conv)
        flop = 2.0 * conv_macs(b, c_in, c_out, 3, h_out, h_out)
        push(f"{name} fwd", f, flop)
        push(f"{name} bwd", bw, 2 * flop)
    up = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1)
    f, bw = fwd_bwd(n, (b, 128, 14, 14), up)
    flop = 2.0 * conv_macs(b, 128, 64, 4, 14, 14)
    push("convT4x4 s2 128->64 14->28 fwd", f, flop)
    push("convT4x4 s2 128->64 14->28 bwd", bw, 2 * flop)
    # what the "bwd" rows include besides the layer: the backward of sum(v * r) for a leaf v
    for name, shape in (("64x28x28", (b, 64, 28, 28)), ("128x14x14", (b, 128, 14, 14))):
        push(f"bwd of sum(y*r) alone, {name}", fwd_bwd(n, shape, nn.Identity())[1], None)
    f, bw = fwd_bwd(n, (b, 64, 28, 28), GnSilu(64))
    push("groupnorm+silu 64x28x28 fwd", f, None)
    push("groupnorm+silu 64x28x28 bwd", bw, None)
    m = 2048
    ma, mb = torch.randn(m, m), torch.randn(m, m)
    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        torch.mm(ma, mb)
        if i > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    ms = quartiles(times)[0]
    flop = 2.0 * m ** 3
    push("sgemm 2048^3", ms, flop)
    return {"impl": "pytorch " + torch.__version__, "mode": "ops", "batch": b, "repeats": n, "ops": ops,
            "sgemm_gflops": round(flop / 1e9 / (ms / 1e3), 3), "peak_rss_mb": peak_rss_mb(),
            "threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description="PyTorch twin of dgm's conv_bench example")
    p.add_argument("mode", choices=["step", "forward", "ops"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    print(json.dumps(run_ops(a) if a.mode == "ops" else run_model(a)))


if __name__ == "__main__":
    main()
