"""Contrastive pretraining of a small anatomix-style feature extractor on procedural label maps.

Why: MaskGen needs a frozen, roughly contrast-invariant feature network. The published
anatomix weights may be unavailable (offline, CI, licence review), so dgbench can train a
small member of the same architecture family itself, following anatomix's recipe
(Dey et al., ICLR 2025, §4 of its pretraining) with procedural shapes in place of
TotalSegmentator masks:

  random label maps rendered as two random 'contrasts' (dgbench.procedural)
  -> the same U-Net on both views; SupCon loss (tau 0.33) on projected voxel features at the
     same random label-pure locations in both views, over anatomix's layers.

Departures from anatomix, each measured or argued (README "Feature extractors"):
- affine InstanceNorm instead of BatchNorm (`--norm`): eval-mode BatchNorm statistics
  gathered at one canvas size do not hold at another;
- several canvas sizes per run (`--sizes`, one drawn per step with P ~ 1/side^3, so each
  size gets an equal share of compute), a width-8 U-Net (CPU-sized);
- deep layers are supervised only at label-pure cells of their grid (`coarse_labels`);
- no shared flip/affine of the two views: our label maps are drawn fresh every step with
  uniformly random rotations and reflections, so a shared flip or rotation only yields
  another map from the same distribution;
- milder per-view training augmentation than TorchIO's defaults (see `corruption_chain`).

Everything is deterministic given `seed`: every draw of step t comes from a generator seeded
by (seed, t), so a run resumed from its checkpoint (`--ckpt-every`, `--stop-after`) repeats an
uninterrupted run exactly. The global RNGs are left untouched.
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgbench.models.anatomix import seeded_extractor_net
from dgbench.procedural import corruption_chain, random_label_map, render_view
from dgbench.atomic import atomic_write_bytes, to_json

# ---------------------------------------------------------------------------------------------
# Loss


class ProjectionHead(nn.Sequential):
    """anatomix's projection head: Linear(C->256, no bias)-BN-ReLU-Linear-BN-ReLU-Linear-BN(no affine)."""

    def __init__(self, cin: int, dim: int = 256):
        super().__init__(nn.Linear(cin, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(True),
                         nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(True),
                         nn.Linear(dim, dim), nn.BatchNorm1d(dim, affine=False))


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised contrastive loss: positives = every other vector with the same label."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / tau
    eye = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    return -(log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp_min(1)).mean()


def coarse_labels(lab: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label map on a grid `factor` times coarser, and which coarse cells are pure (every
    fine voxel in the cell has one label). Sampling only pure cells keeps a deep layer's vector
    from being asked to match a label that covers a corner of its cell (what corner-aligned
    nearest downsampling did)."""
    if factor == 1:
        return lab, torch.ones_like(lab, dtype=torch.bool)
    v = lab[None, None].float()
    hi = F.max_pool3d(v, factor)[0, 0]
    lo = -F.max_pool3d(-v, factor)[0, 0]
    return hi.long(), hi == lo


def multilayer_supcon(feats: list[torch.Tensor], lab: torch.Tensor, heads: nn.ModuleList,
                      n_locations: int, tau: float, g: torch.Generator) -> torch.Tensor:
    """feats[i]: 2 x C x s^3 (the two views of one label map). Same random locations in both
    views, drawn among the label-pure cells of each layer's grid (all cells if none is pure)."""
    total = 0.0
    for f, head in zip(feats, heads):
        lab_s, pure = coarse_labels(lab, lab.shape[-1] // f.shape[-1])
        cand = pure.flatten().nonzero()[:, 0]
        if len(cand) == 0:
            cand = torch.arange(pure.numel())
        idx = cand[torch.randperm(len(cand), generator=g)[:n_locations]]
        flat = f.flatten(2)
        z = torch.cat((flat[0][:, idx].T, flat[1][:, idx].T))
        total = total + supcon_loss(head(z), lab_s.flatten()[idx].repeat(2), tau)
    return total / len(feats)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class PretrainConfig:
    """The recipe. Defaults are the bundled extractor's (see README "Feature extractors")."""
    steps: int = 6000
    sizes: tuple = (32, 48, 64)     # canvas sides; one is drawn per step (see `size_probs`)
    ngf: int = 8
    num_downs: int = 4
    norm: str = "instance"
    norm_eps: float = 1e-5
    pairs: int = 1                  # label maps (two views each) per step
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    tau: float = 0.33
    n_locations: int = 256
    n_shapes: tuple = (10, 30)
    zoom: tuple = (0.35, 1.0)  # world crop per label map: scale augmentation (see random_label_map)

    def size_probs(self) -> np.ndarray:
        """P(size) proportional to 1/size^3: every canvas size gets the same share of compute."""
        w = 1.0 / np.asarray(self.sizes, dtype=float) ** 3
        return w / w.sum()

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}



def step_generator(seed: int, step: int) -> torch.Generator:
    """Every random draw of step `step` comes from here: a run is a pure function of its seed,
    and a resumed run replays exactly the steps it has not done."""
    state = np.random.SeedSequence([seed, step, 0x5EED]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def draw_size(cfg: PretrainConfig, g: torch.Generator) -> int:
    return int(cfg.sizes[int(torch.multinomial(torch.as_tensor(cfg.size_probs()), 1, generator=g))])


def sample_batch(cfg: PretrainConfig, step: int, chains) -> tuple[list[torch.Tensor], torch.Tensor, torch.Generator]:
    """Step `step`'s label maps and their views (2*pairs x 1 x S^3, pair i = rows 2i, 2i+1)."""
    g = step_generator(cfg.seed, step)
    size = draw_size(cfg, g)
    labs, views = [], []
    for _ in range(cfg.pairs):
        lab = random_label_map(size, g, cfg.n_shapes, zoom=cfg.zoom)
        for c in chains:
            c.set_random_state(seed=int(torch.randint(2 ** 31, (), generator=g)))
            views.append(render_view(lab, g, c))
        labs.append(lab)
    return labs, torch.stack(views), g


class Pretrainer:
    """Network, heads, optimiser and schedule; `train_step()` trains one step, `state()`/`load()`
    resume exactly (data and sampling depend only on (seed, step))."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        m = 2 ** cfg.num_downs
        bad = [s for s in cfg.sizes if s % m or s < 2 * m]
        if bad:
            raise ValueError(f"canvas sizes {bad} must be multiples of {m} and at least {2 * m} "
                             f"(num_downs={cfg.num_downs})")
        self.chains = (corruption_chain(0), corruption_chain(0))  # reseeded every step
        self.net = seeded_extractor_net(cfg.seed, cfg.ngf, cfg.num_downs, cfg.norm, cfg.norm_eps)
        self.layers = self.net.pretrain_layers()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 10_000)
            self.heads = nn.ModuleList(ProjectionHead(c) for c in self.net.layer_channels(self.layers))
        params = list(self.net.parameters()) + list(self.heads.parameters())
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda i: 1.0 - i / max(1, cfg.steps))
        self.step = 0
        self.history: list[float] = []
        self.sizes: list[int] = []

    def train_step(self) -> float:
        labs, x, g = sample_batch(self.cfg, self.step, self.chains)
        self.net.train()
        self.heads.train()
        _, feats = self.net(x, layers=self.layers)
        loss = sum(multilayer_supcon([f[2 * i:2 * i + 2] for f in feats], lab, self.heads,
                                     self.cfg.n_locations, self.cfg.tau, g)
                   for i, lab in enumerate(labs)) / len(labs)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.history.append(float(loss.detach()))
        self.sizes.append(int(x.shape[-1]))
        return self.history[-1]

    def state(self) -> dict:
        return {"config": self.cfg.to_json(), "step": self.step, "history": self.history,
                "sizes": self.sizes, "net": self.net.state_dict(), "heads": self.heads.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load(self, state: dict, path: Path | str = "checkpoint") -> None:
        now = self.cfg.to_json()
        if state["config"] != now:
            diff = {k: (v, now.get(k)) for k, v in state["config"].items() if now.get(k) != v}
            raise ValueError(f"{path} was made with other settings (checkpoint vs now: {diff}); "
                             "resume with the same options, or use another --name / --out")
        self.net.load_state_dict(state["net"])
        self.heads.load_state_dict(state["heads"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.history, self.sizes = state["step"], list(state["history"]), list(state["sizes"])


def pretrain(steps: int = PretrainConfig.steps, seed: int = 0, log_every: int = 50, log=None,
             progress: bool = False, checkpoint: Path | None = None, ckpt_every: int = 200,
             stop_after: int | None = None, **overrides) -> dict:
    """Train and return {"net", "config", "loss" (per-step history), "sizes", "wall_time_s",
    "complete"}. With `checkpoint`, resume from that file when it exists and save to it every
    `ckpt_every` steps (atomically); `stop_after` ends this call after that many steps (a
    piece of a long pretraining). `log` takes one line of text."""
    cfg = PretrainConfig(steps=steps, seed=seed, **overrides)
    tr = Pretrainer(cfg)
    if checkpoint is not None and Path(checkpoint).exists():
        tr.load(torch.load(checkpoint, map_location="cpu", weights_only=False), checkpoint)
        if log is not None:
            log(f"resumed from {checkpoint} at step {tr.step}/{steps}")
    end = steps if stop_after is None else min(steps, tr.step + stop_after)
    t0 = time.time()
    from tqdm import tqdm
    bar = tqdm(total=steps, initial=tr.step, desc="pretrain-features", dynamic_ncols=True,
               file=sys.stdout, disable=not (progress and sys.stdout.isatty()))  # quiet in log files

    def save():
        if checkpoint is not None:
            buf = io.BytesIO()
            torch.save(tr.state(), buf)
            atomic_write_bytes(Path(checkpoint), buf.getvalue())

    while tr.step < end:
        tr.train_step()
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(tr.history[-20:]):.4f}")
        if log is not None and (tr.step % log_every == 0 or tr.step == steps):
            k = min(log_every, len(tr.history))
            log(f"step {tr.step}/{steps} loss {tr.history[-1]:.4f} mean{k} "
                f"{np.mean(tr.history[-k:]):.4f} lr {tr.sched.get_last_lr()[0]:.2e} "
                f"elapsed {time.time() - t0:.0f}s")
        if tr.step % ckpt_every == 0 or tr.step == end:
            save()
    bar.close()
    tr.net.eval()
    return {"net": tr.net, "config": cfg, "loss": tr.history, "sizes": tr.sizes,
            "wall_time_s": time.time() - t0, "complete": tr.step >= steps}


def save_extractor(result: dict, out_dir: Path, name: str, command: str,
                   invocation: str | None = None, wall_time_s: float | None = None) -> tuple[Path, Path]:
    """Write `<name>.pt` (fp32 state_dict, anatomix key layout) and `<name>.json` provenance."""
    from dgbench.models.weights import git_blob_sha1
    out_dir.mkdir(parents=True, exist_ok=True)
    pt, meta = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in result["net"].state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(pt, buf.getvalue())
    hist, cfg = result["loss"], result["config"]
    k = max(1, min(500, len(hist) // 10))
    info = {
        "name": name,
        "architecture": {"class": "dgbench.models.anatomix.Unet", "input_nc": 1,
                         "output_nc": 16, "num_downs": cfg.num_downs, "ngf": cfg.ngf,
                         "norm": cfg.norm, "norm_eps": cfg.norm_eps},
        "dtype": "float32",
        "config": cfg.to_json(),
        "seed": cfg.seed, "steps": cfg.steps, "sizes": list(cfg.sizes),
        "initial_loss": float(np.mean(hist[:k])), "final_loss": float(np.mean(hist[-k:])),
        "loss_mean_over_steps": k,
        "wall_time_s": round(wall_time_s if wall_time_s is not None else result["wall_time_s"], 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "command": command,
        "invocation": invocation,
        "git_blob_sha1": git_blob_sha1(pt),
        "recipe": "anatomix-style SupCon pretraining on procedural label maps "
                  "(dgbench/pretrain.py)",
    }
    atomic_write_bytes(meta, (to_json(info, sort_keys=False) + "\n").encode())
    return pt, meta


# ---------------------------------------------------------------------------------------------
# CLI


_CLI_OPTIONS = ("name", "out", "steps", "sizes", "ngf", "num_downs", "norm", "pairs", "seed", "lr",
                "threads", "log_every", "ckpt_every")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes wants comma-separated integers, got {text!r}")


def register_cli(subparsers) -> None:
    d = PretrainConfig()
    p = subparsers.add_parser(
        "pretrain-features",
        help="pretrain a small anatomix-style feature extractor on procedural label maps",
        description="Contrastive (SupCon) pretraining of an anatomix-family U-Net on random "
                    "procedural label maps rendered with random contrasts. Resumable: it saves "
                    "<out>/<name>.ckpt every --ckpt-every steps and continues from it when "
                    "run again with the same options (the result is identical to an "
                    "uninterrupted run). When all --steps are done it writes <out>/<name>.pt "
                    "(fp32 state_dict), <name>.json (provenance) and appends to <name>.log. "
                    "Use the result with --hparam extractor_weights=<out>/<name>.pt.")
    p.add_argument("--name", default="synthanat-v2", help="output file stem")
    p.add_argument("--out", default="results/pretrained", help="output folder")
    p.add_argument("--steps", type=int, default=d.steps, help="total steps of the schedule")
    p.add_argument("--sizes", type=_sizes, default=d.sizes,
                   help="canvas sides, comma-separated; one per step, P proportional to 1/side^3")
    p.add_argument("--ngf", type=int, default=d.ngf, help="width of the first level")
    p.add_argument("--num-downs", type=int, default=d.num_downs, help="U-Net depth")
    p.add_argument("--norm", choices=("batch", "instance"), default=d.norm)
    p.add_argument("--pairs", type=int, default=d.pairs, help="label maps (2 views each) per step")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate, decayed linearly to 0")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many steps in this call (resume later with the same command)")
    p.set_defaults(func=cli_main)


def cli_main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{args.name}.ckpt"
    logf = open(out / f"{args.name}.log", "a")
    # canonical, complete form of this run (every option spelled out), whatever the entry point
    command = "dgbench pretrain-features " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(','.join(map(str, v)) if isinstance(v, tuple) else str(v))}"
        for k, v in vars(args).items() if k in _CLI_OPTIONS)

    def log(line: str) -> None:
        from tqdm import tqdm
        tqdm.write(line, file=sys.stdout)
        logf.write(line + "\n")
        logf.flush()

    log(f"command: {command}" + (f" --stop-after {args.stop_after}" if args.stop_after else ""))
    res = pretrain(steps=args.steps, seed=args.seed, sizes=args.sizes, ngf=args.ngf,
                   num_downs=args.num_downs, norm=args.norm, pairs=args.pairs, lr=args.lr,
                   log_every=args.log_every, log=log, progress=True, checkpoint=ckpt,
                   ckpt_every=args.ckpt_every, stop_after=args.stop_after)
    if not res["complete"]:
        log(f"stopped at step {len(res['loss'])}/{args.steps}; run the same command again to continue")
        logf.close()
        return 0
    pt, meta = save_extractor(res, out, args.name, command,
                              invocation=" ".join(shlex.quote(a) for a in sys.argv),
                              wall_time_s=_logged_wall_time(out / f"{args.name}.log"))
    info = json.loads(meta.read_text())
    log(f"wrote {pt} ({pt.stat().st_size / 1e6:.2f} MB, git blob sha1 {info['git_blob_sha1']}) "
        f"and {meta}; loss {info['initial_loss']:.4f} -> {info['final_loss']:.4f}")
    logf.close()
    return 0


def _logged_wall_time(log_path: Path) -> float:
    """Sum of the 'elapsed' times of every piece of a resumed pretraining, from its log."""
    total, last = 0.0, 0.0
    for line in log_path.read_text().splitlines():
        if line.startswith("command:"):
            total, last = total + last, 0.0
        elif " elapsed " in line:
            last = float(line.rsplit(" elapsed ", 1)[1].rstrip("s"))
    return total + last


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m dgbench.pretrain ...`)."""
    parser = argparse.ArgumentParser(prog="dgbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
