"""PyTorch twin of dgm's MLP VAE training step (bench/step_throughput).

784-512-512-2x32 encoder, 32-512-512-784 decoder, ReLU, Bernoulli decoder on dynamically binarized pixels,
BCE-with-logits + analytic KL, Adam (lr 1e-3, no weight decay), batch 128, float32, CPU.
Prints one JSON line with the median and quartiles in milliseconds.

usage: python bench/torch/vae_step.py [STEPS] [BATCH]   (threads: torch.set_num_threads from DGM_BENCH_THREADS, default 2)
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class VAE(nn.Module):
    def __init__(self, d=784, h=512, z=32):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * z))
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))

    def loss(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return (recon + kl).mean()


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    bs = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (10_000, 784), dtype=torch.uint8)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    warmup = 10
    for s in range(steps + warmup):
        t0 = time.perf_counter()
        idx = (torch.arange(bs) + s * bs) % pixels.shape[0]
        x = torch.bernoulli(pixels[idx].float() / 255.0)  # dynamic binarization, as dgm's step does
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[round((len(times) - 1) * p)]
    print(json.dumps({"impl": "pytorch " + torch.__version__, "steps": steps, "batch": bs,
                      "median_ms": round(q(0.5), 3), "q1_ms": round(q(0.25), 3), "q3_ms": round(q(0.75), 3),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
