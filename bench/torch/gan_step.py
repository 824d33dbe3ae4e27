"""PyTorch twins of dgm's DCGAN and SN-GAN training step (bench/gan_step).

The networks mirror crates/dgm/src/models/gan/{nets.rs, dcgan.rs} as built by the [model] sections of
configs/dcgan-mnist.toml and configs/sngan-mnist.toml (read with tomllib; dgm's presets fill the keys a config
leaves out) on 1x28x28 images in [-1, 1], with C = channels:

  generator      z (latent_dim) -> fc: Linear(latent, 2C*7*7) -> reshape (2C, 7, 7) -> gn0: GroupNorm(8, 2C) -> ReLU
                 -> up1: ConvTranspose2d(2C, C, 4, stride 2, pad 1) -> gn1: GroupNorm(8, C) -> ReLU
                 -> up2: ConvTranspose2d(C, 1, 4, 2, 1) -> tanh        (GroupNorm eps 1e-5, groups = the largest
                 divisor of the channels that is at most 8)
  discriminator  c1: Conv2d(1, C, 4, 2, 1) -> LeakyReLU(0.2) -> c2: Conv2d(C, 2C, 4, 2, 1) -> LeakyReLU(0.2)
                 -> flatten -> out: Linear(2C*7*7, 1) -> one logit per image
  spectral norm  (sngan: every discriminator layer) W / sigma with W seen as (out, in*k*k), sigma = |W^T u| for
                 the stored unit vector u (a buffer, no gradient); before each discriminator update one power
                 iteration v = W^T u / |W^T u|, u = W v / |W v|.
  losses         non-saturating (dcgan): L_D = E softplus(-D(x)) + E softplus(D(G(z))), L_G = E softplus(-D(G(z)));
                 hinge (sngan): L_D = E relu(1 - D(x)) + E relu(1 + D(G(z))), L_G = -E D(G(z)).

Module names equal dgm's variable names (generator.*, discriminator.*, with u), so dgm's weights load with
load_state_dict(strict=True). One step: d_steps discriminator updates (dcgan 1, sngan 5; each: power iteration,
L_D on the real batch and as many G(z) with G detached, backward, Adam on the discriminator), then one generator
update (L_G on fresh z, backward, Adam on the generator); Adam with the config's lr and betas, eps 1e-8, no weight
decay, on one fixed batch of random images in [-1, 1], float32, CPU. Prints one JSON line with the median and
quartiles in milliseconds.

usage: python bench/torch/gan_step.py MODEL [STEPS] [BATCH]   (dcgan|sngan; threads: DGM_BENCH_THREADS, default 2)
       python bench/torch/gan_step.py --check DIR MODEL       (compare with `gan_step --dump DIR MODEL`)
"""
import json
import math
import os
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

from flow_step import num_params, read_tensors

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
# dgm's GanConfig::default and presets (crates/dgm/src/models/gan/dcgan.rs), overridden by the config's [model]
BASE = {"latent_dim": 64, "channels": 64}
PRESETS = {
    "dcgan": {"loss": "non_saturating", "spectral_norm": False, "d_steps": 1},
    "sngan": {"loss": "hinge", "spectral_norm": True, "d_steps": 5},
}


def config(name):
    with open(os.path.join(CONFIG_DIR, f"{name}-mnist.toml"), "rb") as f:
        cfg = tomllib.load(f)
    model = {**BASE, **PRESETS[name], **{k: v for k, v in cfg["model"].items() if k != "name"}}
    return model, cfg["train"]


def groups_for(ch):
    return next(g for g in range(min(8, ch), 0, -1) if ch % g == 0)


def unit(x):
    return x / x.norm().clamp(min=1e-12)


class SN(nn.Module):
    """A layer whose weight is used as W / sigma (dgm's nn/spectral.rs)."""

    def __init__(self, layer):
        super().__init__()
        self.weight = layer.weight
        self.bias = layer.bias
        self.register_buffer("u", torch.randn(layer.weight.shape[0]))

    @torch.no_grad()
    def power_iteration(self):
        w = self.weight.reshape(self.weight.shape[0], -1)
        v = unit(w.t() @ unit(self.u))
        self.u.copy_(unit(w @ v))

    def normalized(self):
        w = self.weight.reshape(self.weight.shape[0], -1)
        sigma = (w.t() @ unit(self.u)).norm().clamp(min=1e-12)
        return self.weight / sigma


class SNConv(SN):
    def forward(self, x):
        return F.conv2d(x, self.normalized(), self.bias, stride=2, padding=1)


class SNLinear(SN):
    def forward(self, x):
        return F.linear(x, self.normalized(), self.bias)


class Generator(nn.Module):
    def __init__(self, z, c):
        super().__init__()
        self.c = c
        self.fc = nn.Linear(z, 2 * c * 7 * 7)
        self.gn0 = nn.GroupNorm(groups_for(2 * c), 2 * c, eps=1e-5)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, 2, 1)
        self.gn1 = nn.GroupNorm(groups_for(c), c, eps=1e-5)
        self.up2 = nn.ConvTranspose2d(c, 1, 4, 2, 1)

    def forward(self, z):
        x = self.fc(z).reshape(z.shape[0], 2 * self.c, 7, 7)
        x = self.up1(F.relu(self.gn0(x)))
        return torch.tanh(self.up2(F.relu(self.gn1(x))))


class Discriminator(nn.Module):
    def __init__(self, c, sn):
        super().__init__()
        conv = lambda i, o: SNConv(nn.Conv2d(i, o, 4, 2, 1)) if sn else nn.Conv2d(i, o, 4, 2, 1)
        lin = lambda i, o: SNLinear(nn.Linear(i, o)) if sn else nn.Linear(i, o)
        self.c1 = conv(1, c)
        self.c2 = conv(c, 2 * c)
        self.out = lin(2 * c * 7 * 7, 1)

    def power_iteration(self):
        for m in (self.c1, self.c2, self.out):
            if isinstance(m, SN):
                m.power_iteration()

    def forward(self, x):
        h = F.leaky_relu(self.c2(F.leaky_relu(self.c1(x), 0.2)), 0.2)
        return self.out(h.reshape(x.shape[0], -1)).squeeze(1)


class Gan(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg["latent_dim"], cfg["channels"])
        self.discriminator = Discriminator(cfg["channels"], cfg["spectral_norm"])

    def d_loss(self, r, f):
        if self.cfg["loss"] == "hinge":
            return F.relu(1 - r).mean() + F.relu(1 + f).mean()
        return F.softplus(-r).mean() + F.softplus(f).mean()

    def g_loss(self, f):
        return -f.mean() if self.cfg["loss"] == "hinge" else F.softplus(-f).mean()


def check(dir, name):
    """Loads dgm's weights (strict: same names and shapes, u included) and, in float64, compares G(z) for dgm's z,
    the mean of D on dgm's real batch and on G(z), and the discriminator's loss (no power iteration: dgm's
    validation loss). Tolerance 1e-4 relative (to max(1, |value|)); exits with status 1 on a mismatch."""
    tensors = read_tensors(dir)
    special = {k: tensors.pop(k) for k in list(tensors) if k.startswith("__")}
    model = Gan(config(name)[0])
    model.load_state_dict(tensors, strict=True)
    model = model.double()
    with torch.no_grad():
        g = model.generator(special["__z"].double())
        r = model.discriminator(special["__x"].double())
        f = model.discriminator(g)
        loss = model.d_loss(r, f)
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()
    errs = {"g_max_rel_err": rel(g, special["__g"].double()),
            "d_real_rel_err": rel(r.mean().reshape(1), special["__d_real"].double()),
            "d_fake_rel_err": rel(f.mean().reshape(1), special["__d_fake"].double()),
            "loss_rel_err": rel(loss.reshape(1), special["__loss"].double())}
    ok = all(v <= 1e-4 for v in errs.values())
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": name, "check": "ok" if ok else "MISMATCH",
                      "params": num_params(model), **errs}))
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-2].strip())
    name = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    bs = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    cfg, train = config(name)
    model = Gan(cfg)
    adam = lambda ps: torch.optim.Adam(ps, lr=train["lr"], betas=(train["beta1"], train["beta2"]), eps=1e-8)
    opt_g, opt_d = adam(model.generator.parameters()), adam(model.discriminator.parameters())
    x = torch.rand(bs, 1, 28, 28) * 2 - 1  # one fixed batch in [-1, 1]
    latent = cfg["latent_dim"]
    times = []
    warmup = 5
    for s in range(steps + warmup):
        t0 = time.perf_counter()
        for _ in range(cfg["d_steps"]):
            model.discriminator.power_iteration()
            fake = model.generator(torch.randn(bs, latent)).detach()
            loss_d = model.d_loss(model.discriminator(x), model.discriminator(fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = model.g_loss(model.discriminator(model.generator(torch.randn(bs, latent))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[math.floor((len(times) - 1) * p + 0.5)]  # round half away from zero, as Rust's f64::round
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": name, "steps": steps, "batch": bs,
                      "d_steps": cfg["d_steps"], "median_ms": round(q(0.5), 3), "q1_ms": round(q(0.25), 3),
                      "q3_ms": round(q(0.75), 3), "params": num_params(model), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
