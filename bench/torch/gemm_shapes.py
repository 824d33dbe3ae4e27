"""The PyTorch side of bench/gemm_shapes: the same matrix products as dgm's examples/gemm_shapes.rs (the forward
y = x W^T, weight gradient dW = g^T x and input gradient dx = g W of every fully connected layer of the GPT's
nanoGPT CPU config and of the MLP VAE), each timed alone through torch.mm on transposed views, as
torch.nn.functional.linear and its backward hand them to the BLAS. Prints one JSON line.

usage: python bench/torch/gemm_shapes.py [REPEATS]   (threads: torch.set_num_threads from DGM_BENCH_THREADS, default 2)
"""

import json
import os
import sys
import time

import torch


def layer(net, count, m, d_in, d_out, dx):
    """The products of a layer x (m x d_in) -> (m x d_out) used `count` times per step, in the example's order."""
    x, w, g = torch.randn(m, d_in), torch.randn(d_out, d_in), torch.randn(m, d_out)
    v = [
        (f"{net} {d_in}->{d_out} fwd", count, lambda: torch.mm(x, w.t())),
        (f"{net} {d_in}->{d_out} dW", count, lambda: torch.mm(g.t(), x)),
    ]
    if dx:
        v.append((f"{net} {d_in}->{d_out} dx", count, lambda: torch.mm(g, w)))
    return v


def median_ms(repeats, f):
    f()
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[round((len(times) - 1) * 0.5)]


def main():
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    repeats = max(1, int(sys.argv[1])) if len(sys.argv) > 1 else 50
    tokens, width, batch = 768, 128, 128
    products = []
    products += layer("gpt", 4, tokens, width, 3 * width, True)
    products += layer("gpt", 4, tokens, width, width, True)
    products += layer("gpt", 4, tokens, width, 4 * width, True)
    products += layer("gpt", 4, tokens, 4 * width, width, True)
    products += layer("gpt", 1, tokens, width, 65, True)
    products += layer("vae", 1, batch, 784, 512, False)
    products += layer("vae", 2, batch, 512, 512, True)
    products += layer("vae", 1, batch, 512, 64, True)
    products += layer("vae", 1, batch, 32, 512, True)
    products += layer("vae", 1, batch, 512, 784, True)
    rows = [{"name": n, "count": c, "ms": median_ms(repeats, f)} for n, c, f in products]
    print(json.dumps({"impl": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(),
                      "repeats": repeats, "products": rows}))


if __name__ == "__main__":
    main()
