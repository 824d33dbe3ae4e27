"""PyTorch twins of dgm's RealNVP and Glow training step (bench/flow_step).

The flows mirror crates/dgm/src/models/flows/{mod.rs, layers.rs, realnvp.rs, glow.rs} as built by the [model]
sections of configs/realnvp-mnist.toml and configs/glow-mnist.toml (read with tomllib; dgm's defaults fill the
keys a config leaves out) on 1x28x28 images in [0, 1]:

  pre       y = logit(a + (1 - 2a) x), log|det| = sum(-(log p + log(1 - p)) + log(1 - 2a)), p = a + (1 - 2a) x
            (a = logit_alpha = 0.05; Glow's preprocess = "shift" instead: y = x - 1/2, log|det| = 0)
  ActNorm   y = (x + b) * exp(log_scale) per channel, log|det| = H W sum(log_scale); data-dependent init
            b = -mean, log_scale = -log(std + 1e-6) per channel over batch and positions (population std)
  1x1 conv  y = W x per pixel, W = P (L0 + l * strict_lower) (U0 + u * strict_upper + diag(sign exp(log_s0 + log_s)))
            with P, L0 (unit diagonal), U0 (strict upper), sign and log_s0 fixed: dgm's LU with partial pivoting
            of a start rotation W0 (dgm draws it from conv_seed; --check reads it from the dump); the variables
            l, u, log_s are offsets from the start, zero at first. log|det| = H W sum(log_s0 + log_s)
  coupling  h = net(x_a) with net = conv3x3(in->hidden), ReLU, conv1x1(hidden->hidden), ReLU, conv3x3(hidden->2 out)
            (the last conv zero-initialised; PyTorch's default init for the others, as dgm's); log s = first half of
            h through tanh (exp_tanh: RealNVP) or log sigmoid(. + 2) (sigmoid: Glow), t = second half;
            y_b = x_b * s + t, log|det| = sum(log s).
            checkerboard mask: pixels with (row + col) % 2 == flip are kept; the conditioner sees x * keep (all
            channels) and outputs 2c channels, applied where the pixel is not kept.
            channel mask: kept = the first floor(c/2) channels (flipped: the last ceil(c/2)), changed = the rest;
            output = cat(kept, changed) (flipped: cat(changed, kept)).
  squeeze   (b, c, h, w) -> (b, 4c, h/2, w/2), channel 4k + 2i + j = pixel (2y + i, 2x + j) of channel k
  split     the first floor(c/2) channels leave as part of z; z = cat(parts in order of leaving, last output)
  prior     standard normal: log p(x) = -1/2 |z|^2 - D/2 log(2 pi) + log|det| of pre and flow

RealNVP (levels L): per level but the last, [ActNorm, checkerboard coupling] x 3 (flips F, T, F), squeeze,
[ActNorm, channel coupling] x 3 (F, T, F), split; last level [ActNorm, checkerboard coupling] x 4 (F, T, F, T);
variables coupling{n}.actnorm.{log_scale,bias}, coupling{n}.net.{0,1,2}.{weight,bias}.
Glow (levels L, steps K): per level a squeeze, K x [ActNorm, 1x1 conv, channel coupling (unflipped)], a split
but after the last; variables step{n}.actnorm.*, step{n}.invconv.{l,u,log_s}, step{n}.coupling.net.*.

Module names equal dgm's variable names, so dgm's weights load with load_state_dict(strict=True) (the fixed
parts of the 1x1 convs and the masks are non-persistent buffers). One step: loss = mean over the batch of
-log p(x) in nats (summed over the 784 dimensions, as dgm's training loss), backward, AdamW (lr 1e-3, no weight
decay, no clipping), on one fixed batch of random images in [0, 1) after ActNorm's data-dependent init on it,
float32, CPU. Prints one JSON line with the median and quartiles in milliseconds.

usage: python bench/torch/flow_step.py MODEL [STEPS] [BATCH]   (realnvp|glow; threads: DGM_BENCH_THREADS, default 2)
       python bench/torch/flow_step.py --check DIR MODEL       (compare with `flow_step --dump DIR MODEL`)
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE = 28
IN_CHANNELS = 1
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
# dgm's defaults (RealNvpConfig::default, GlowConfig::default), overridden by the config's [model] keys
DEFAULTS = {
    "realnvp": {"levels": 2, "hidden": 64, "vector_couplings": 8, "coupling_scale": "exp_tanh", "actnorm": True,
                "logit_alpha": 0.05},
    "glow": {"levels": 2, "steps": 8, "hidden": 64, "coupling_scale": "sigmoid", "preprocess": "shift",
             "logit_alpha": 0.05, "conv_seed": 0},
}
# the [model] sections of configs/<model>-mnist.toml, for interpreters without tomllib (Python < 3.11)
FALLBACK = {
    "realnvp": {"levels": 2, "hidden": 64, "coupling_scale": "exp_tanh", "actnorm": True, "logit_alpha": 0.05},
    "glow": {"levels": 2, "steps": 8, "hidden": 64, "coupling_scale": "sigmoid", "preprocess": "logit",
             "logit_alpha": 0.05},
}


def model_config(name):
    """dgm's defaults for `name` with the [model] keys of configs/<name>-mnist.toml over them."""
    if name not in DEFAULTS:
        sys.exit(f"unknown model '{name}': expected one of {', '.join(DEFAULTS)}")
    cfg = dict(DEFAULTS[name])
    try:
        import tomllib
        with open(os.path.join(CONFIG_DIR, f"{name}-mnist.toml"), "rb") as f:
            section = dict(tomllib.load(f)["model"])
        assert section.pop("name") == name, f"configs/{name}-mnist.toml is not a {name} config"
    except ImportError:
        section = FALLBACK[name]
    unknown = set(section) - set(cfg)
    assert not unknown, f"keys {unknown} in configs/{name}-mnist.toml are not known to the twin"
    cfg.update(section)
    return cfg


def dgm_lu(m, c):
    """dgm's layers::lu: LU with partial pivoting of a c x c matrix (row-major list, float64) -> (P, L, U) with
    m = P L U, L unit lower triangular; on ties the last maximal row is the pivot, as Rust's max_by."""
    u = list(m)
    l = [0.0] * (c * c)
    perm = list(range(c))
    for k in range(c):
        p, best = k, abs(u[k * c + k])
        for a in range(k + 1, c):
            if abs(u[a * c + k]) >= best:
                p, best = a, abs(u[a * c + k])
        if p != k:
            for j in range(c):
                u[k * c + j], u[p * c + j] = u[p * c + j], u[k * c + j]
                l[k * c + j], l[p * c + j] = l[p * c + j], l[k * c + j]
            perm[k], perm[p] = perm[p], perm[k]
        for i in range(k + 1, c):
            f = u[i * c + k] / u[k * c + k]
            l[i * c + k] = f
            for j in range(k, c):
                u[i * c + j] -= f * u[k * c + j]
    for i in range(c):
        l[i * c + i] = 1.0
    pm = [0.0] * (c * c)
    for i, r in enumerate(perm):
        pm[r * c + i] = 1.0
    return pm, l, u


class ActNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x, init=False):
        b, c, h, w = x.shape
        if init:  # dgm's ActNorm::data_init
            with torch.no_grad():
                flat = x.transpose(0, 1).reshape(c, -1)
                mean = flat.mean(1)
                var = (flat - mean[:, None]).square().mean(1)
                self.log_scale.copy_(-(var.sqrt() + 1e-6).log())
                self.bias.copy_(-mean)
        y = (x + self.bias.view(1, c, 1, 1)) * self.log_scale.exp().view(1, c, 1, 1)
        return y, (self.log_scale.sum() * (h * w)).expand(b)


class InvConv1x1(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.l = nn.Parameter(torch.zeros(c, c))
        self.u = nn.Parameter(torch.zeros(c, c))
        self.log_s = nn.Parameter(torch.zeros(c))
        idx = torch.arange(c)
        self.register_buffer("l_mask", (idx[None, :] < idx[:, None]).float(), persistent=False)
        self.register_buffer("u_mask", (idx[None, :] > idx[:, None]).float(), persistent=False)
        q, _ = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))  # a random rotation, until set_start
        self.set_start(q)

    def set_start(self, w0):
        """P, L0, U0, sign and log|s0| from dgm's LU of the start matrix w0 (c, c), in float64, stored as f32."""
        c = self.c
        pm, l, u = dgm_lu([float(v) for v in w0.double().flatten()], c)
        mat = lambda v: torch.tensor(v, dtype=torch.float64).reshape(c, c)
        u = mat(u)
        diag = u.diagonal().clone()
        for name, v in [("p", mat(pm)), ("l0", mat(l)), ("u0", u.triu(1)), ("sign", diag.sign()),
                        ("log_s0", diag.abs().log())]:
            self.register_buffer(name, v.float(), persistent=False)

    def weight(self):
        l = self.l0 + self.l * self.l_mask
        u = self.u0 + self.u * self.u_mask + torch.diag(self.sign * (self.log_s0 + self.log_s).exp())
        return self.p @ l @ u

    def forward(self, x, init=False):
        b, c, h, w = x.shape
        y = F.conv2d(x, self.weight()[:, :, None, None])
        return y, ((self.log_s0 + self.log_s).sum() * (h * w)).expand(b)


class Coupling(nn.Module):
    """An affine coupling over (c, h, w) inputs; variables net.{0,1,2}.{weight,bias}."""

    def __init__(self, shape, mask, flip, scale, hidden):
        super().__init__()
        c, h, w = shape
        self.mask, self.flip, self.scale = mask, flip, scale
        if mask == "checkerboard":
            cin, cout = c, c
            rc = torch.arange(h)[:, None] + torch.arange(w)[None, :]
            self.register_buffer("board", ((rc % 2) == (1 if flip else 0)).float()[None, None], persistent=False)
        else:
            cin, cout = (c - c // 2, c // 2) if flip else (c // 2, c - c // 2)
        last = nn.Conv2d(hidden, 2 * cout, 3, 1, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.ModuleList([nn.Conv2d(cin, hidden, 3, 1, 1), nn.Conv2d(hidden, hidden, 1, 1, 0), last])

    def params(self, cond):
        hh = self.net[2](F.relu(self.net[1](F.relu(self.net[0](cond)))))
        half = hh.shape[1] // 2
        raw = hh[:, :half]
        log = torch.tanh(raw) if self.scale == "exp_tanh" else -F.softplus(-(raw + 2.0))
        return log.exp(), log, hh[:, half:]

    def forward(self, x, init=False):
        b, c = x.shape[:2]
        if self.mask == "checkerboard":
            keep = self.board
            change = 1.0 - keep
            s, log, t = self.params(x * keep)
            s, log, t = s * change + keep, log * change, t * change
            return x * s + t, log.reshape(b, -1).sum(1)
        if self.flip:
            kept, other = x[:, c // 2:], x[:, :c // 2]
        else:
            kept, other = x[:, :c // 2], x[:, c // 2:]
        s, log, t = self.params(kept)
        changed = other * s + t
        y = torch.cat([changed, kept], 1) if self.flip else torch.cat([kept, changed], 1)
        return y, log.reshape(b, -1).sum(1)


class RealNVPCoupling(Coupling):
    """RealNVP's unit coupling{n}: an ActNorm (variables actnorm.*, if configured) then the coupling."""

    def __init__(self, shape, mask, flip, scale, hidden, actnorm):
        super().__init__(shape, mask, flip, scale, hidden)
        self.actnorm = ActNorm(shape[0]) if actnorm else None

    def forward(self, x, init=False):
        ld = 0.0
        if self.actnorm is not None:
            x, ld = self.actnorm(x, init)
        y, ld2 = super().forward(x, init)
        return y, ld + ld2


class GlowStep(nn.Module):
    """Glow's step{n}: ActNorm, invertible 1x1 conv, channel coupling."""

    def __init__(self, shape, scale, hidden):
        super().__init__()
        self.actnorm = ActNorm(shape[0])
        self.invconv = InvConv1x1(shape[0])
        self.coupling = Coupling(shape, "channel", False, scale, hidden)

    def forward(self, x, init=False):
        x, a = self.actnorm(x, init)
        x, b = self.invconv(x)
        x, c = self.coupling(x)
        return x, a + b + c


class Flow(nn.Module):
    """Pre-processing, the steps (layers, squeezes, splits) and the standard normal prior."""

    def __init__(self, name, cfg):
        super().__init__()
        self.name = name
        self.steps = []  # ("layer", module name) | ("squeeze",) | ("split",)
        shape = [IN_CHANNELS, IMAGE, IMAGE]
        scale, hidden = cfg["coupling_scale"], cfg["hidden"]
        assert scale in ("exp_tanh", "sigmoid"), scale

        def add(mod_name, module):
            self.add_module(mod_name, module)
            self.steps.append(("layer", mod_name))

        def squeeze():
            shape[:] = [4 * shape[0], shape[1] // 2, shape[2] // 2]
            self.steps.append(("squeeze",))

        def split():
            shape[0] -= shape[0] // 2
            self.steps.append(("split",))

        n = 0
        if name == "realnvp":
            self.alpha = cfg["logit_alpha"]
            for level in range(cfg["levels"]):
                last = level + 1 == cfg["levels"]
                for i in range(4 if last else 3):
                    add(f"coupling{n}", RealNVPCoupling(shape, "checkerboard", i % 2 == 1, scale, hidden,
                                                        cfg["actnorm"]))
                    n += 1
                if not last:
                    squeeze()
                    for i in range(3):
                        add(f"coupling{n}", RealNVPCoupling(shape, "channel", i % 2 == 1, scale, hidden,
                                                            cfg["actnorm"]))
                        n += 1
                    split()
        else:
            assert cfg["preprocess"] in ("shift", "logit"), cfg["preprocess"]
            self.alpha = cfg["logit_alpha"] if cfg["preprocess"] == "logit" else None
            for level in range(cfg["levels"]):
                squeeze()
                for _ in range(cfg["steps"]):
                    add(f"step{n}", GlowStep(shape, scale, hidden))
                    n += 1
                if level + 1 < cfg["levels"]:
                    split()

    def pre(self, x):
        if self.alpha is None:  # Glow's shift
            return x - 0.5, torch.zeros(x.shape[0], dtype=x.dtype)
        a = self.alpha
        p = x * (1.0 - 2.0 * a) + a
        log_p, log_q = p.log(), (1.0 - p).log()
        ld = -(log_p + log_q) + math.log(1.0 - 2.0 * a)
        return log_p - log_q, ld.reshape(x.shape[0], -1).sum(1)

    def encode(self, x, init=False):
        """z (b, D) and the log-determinant of pre and flow (b,); `init`: ActNorm's data-dependent init on x."""
        b = x.shape[0]
        h, ld = self.pre(x)
        zs = []
        for step in self.steps:
            if step[0] == "layer":
                h, l = getattr(self, step[1])(h, init)
                ld = ld + l
            elif step[0] == "squeeze":
                _, c, hh, ww = h.shape
                h = h.reshape(b, c, hh // 2, 2, ww // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, hh // 2,
                                                                                          ww // 2)
            else:
                c = h.shape[1]
                zs.append(h[:, :c // 2].reshape(b, -1))
                h = h[:, c // 2:]
        zs.append(h.reshape(b, -1))
        return torch.cat(zs, 1), ld

    def log_prob(self, x, init=False):
        z, ld = self.encode(x, init)
        d = z.shape[1]
        return -0.5 * z.square().sum(1) - 0.5 * d * math.log(2.0 * math.pi) + ld


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def read_tensors(dir):
    """The tensors written by `flow_step --dump DIR MODEL`: DIR/tensors.txt names and shapes, DIR/tensors.bin f32 LE."""
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


def zero_start(name):
    """The variables that start at zero in dgm (and that the dump perturbs)."""
    return ".net.2." in name or ".invconv." in name


def check(dir, name):
    """Loads dgm's weights (strict: same names and shapes) and start rotations; in float64, (a) reruns ActNorm's
    data-dependent init on dgm's init batch with the zero-start variables at zero and compares the ActNorm values,
    (b) compares the per-example log-likelihood (relative), the code z and the loss on dgm's batch. Tolerance 1e-4
    relative (to max(1, |value|)) for (b), 1e-5 for (a); exits with status 1 on a mismatch."""
    tensors = read_tensors(dir)
    special = {k: tensors.pop(k) for k in list(tensors) if k.startswith("__")}
    model = Flow(name, model_config(name))
    for k, w0 in special.items():
        if k.startswith("__w0."):
            model.get_submodule(k[len("__w0."):]).set_start(w0)
    model.load_state_dict(tensors, strict=True)
    model = model.double()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if zero_start(k):
                p.zero_()
        model.log_prob(special["__x_init"].double(), init=True)
        init = {k: p.clone() for k, p in model.named_parameters() if ".actnorm." in k}
        model.load_state_dict({k: v.double() for k, v in tensors.items()}, strict=True)
        ll = model.log_prob(special["__x"].double())
        z, _ = model.encode(special["__x"].double())
        loss = -ll.mean()
    init_err = max((init[k] - tensors[k].double()).abs().max().item() / max(1.0, tensors[k].abs().max().item())
                   for k in init)
    ll_dgm, z_dgm, loss_dgm = special["__ll"].double(), special["__z"].double(), special["__loss"].double()
    ll_rel = ((ll - ll_dgm).abs() / ll_dgm.abs().clamp(min=1.0)).max().item()
    z_err = (z - z_dgm).abs().max().item() / max(1.0, z_dgm.abs().max().item())
    loss_rel = abs(loss.item() - loss_dgm.item()) / max(1.0, abs(loss_dgm.item()))
    # f32 (dgm) against f64 (twin): observed errors are ~1e-6; the init statistics are means over >= 1568 values
    ok = ll_rel <= 1e-4 and z_err <= 1e-4 and loss_rel <= 1e-4 and init_err <= 1e-5
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": name, "check": "ok" if ok else "MISMATCH",
                      "params": num_params(model), "ll_max_rel_err": ll_rel, "z_max_rel_err": z_err,
                      "loss_rel_err": loss_rel, "actnorm_init_max_rel_err": init_err,
                      "ll_dgm_mean": ll_dgm.mean().item()}))
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-2].strip())
    name = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    bs = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    torch.set_num_threads(int(os.environ.get("DGM_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    model = Flow(name, model_config(name))
    x = torch.rand(bs, IN_CHANNELS, IMAGE, IMAGE)  # one fixed batch in [0, 1)
    with torch.no_grad():
        model.log_prob(x, init=True)  # ActNorm's data-dependent init, as dgm's trainer before the first step
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    times = []
    warmup = 10
    for s in range(steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda p: times[math.floor((len(times) - 1) * p + 0.5)]  # round half away from zero, as Rust's f64::round
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": name, "steps": steps, "batch": bs,
                      "median_ms": round(q(0.5), 3), "q1_ms": round(q(0.25), 3), "q3_ms": round(q(0.75), 3),
                      "params": num_params(model), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
