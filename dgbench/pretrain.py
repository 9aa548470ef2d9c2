"""Contrastive pretraining of a small anatomix-style feature extractor on procedural label maps.

Why: MaskGen needs a frozen, roughly contrast-invariant feature network. The published
anatomix weights may be unavailable (offline, CI, licence review), so dgbench can train a
small member of the same architecture family itself, following anatomix's recipe
(anatomix.md §4 / §4.5) with procedural shapes in place of TotalSegmentator masks:

  random label map (10-30 labels: superellipsoids, shells, thresholded noise blobs, Voronoi
  cells; each with a random affine incl. reflections and a smooth warp; optional warped
  sphere foreground + envelope label; a random zoomed crop of the map for scale variety)
  -> two views with independent random GMM intensities per label, multiplicative texture and
     a corruption chain (bias field, k-space spikes, gamma, blur, Gibbs ringing, sharpening,
     low-resolution simulation, noise; MONAI transforms)
  -> the same Unet on both views; SupCon loss (tau 0.33) on projected voxel features at the
     same random locations in both views, over several encoder/decoder layers.

Not done (yet): geometric training augmentation (§4.3 flips/affine - the maps are random
already), motion artefacts, median smoothing of the label map. Known limitation: a net
trained on one canvas size transfers poorly to much larger inputs (its deepest levels see
2^3 voxels at 32^3); train at the patch size it will be used at.

This generator is deliberately separate from the synthetic *benchmark* generator in
dgbench/data: features must not be tuned to the benchmark's own image model.

Everything is deterministic given `seed` (a private torch.Generator, numpy RNG and seeded
MONAI transforms; the global RNGs are left untouched).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgbench.models.anatomix import ANATOMIX_PRETRAIN_LAYERS, Unet, kaiming_init

# ---------------------------------------------------------------------------------------------
# Procedural label maps


def _grid(size: int, zoom: float = 1.0, offset: torch.Tensor | None = None) -> torch.Tensor:
    """World coordinates of the voxel centres, shape S x S x S x 3, last dim ordered
    (x, y, z) as grid_sample expects. zoom 1 spans the whole [-1, 1] world; zoom < 1 is a
    crop of it around `offset`, so the same shapes cover more voxels (scale augmentation)."""
    r = torch.linspace(-zoom, zoom, size)
    z, y, x = torch.meshgrid(r, r, r, indexing="ij")
    grid = torch.stack((x, y, z), dim=-1)
    return grid if offset is None else grid + offset


def _noise_at(grid: torch.Tensor, channels: int, low: int, g: torch.Generator) -> torch.Tensor:
    """Smooth random field defined in world coordinates (Gaussian noise on a `low`^3 lattice
    over [-1, 1], trilinear), evaluated at `grid`: S x S x S x channels."""
    n = torch.randn((1, channels, low, low, low), generator=g)
    out = F.grid_sample(n, grid[None], mode="bilinear", padding_mode="reflection",
                        align_corners=True)
    return out[0].permute(1, 2, 3, 0)


def _smooth_noise(shape: tuple[int, ...], low: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise on a `low`^3 grid, trilinearly upsampled to size^3: C x S x S x S."""
    n = torch.randn((1, *shape, low, low, low), generator=g)
    return F.interpolate(n, size=(size,) * 3, mode="trilinear", align_corners=True)[0]


def _random_rotation(g: torch.Generator) -> torch.Tensor:
    """Uniform random orthogonal matrix; with probability 1/2 a reflection (det -1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r))
    if torch.rand((), generator=g) < 0.5:
        q[:, 0] = -q[:, 0]
    return q


def _u(g: torch.Generator, lo: float, hi: float, n: int | tuple = ()) -> torch.Tensor:
    shape = (n,) if isinstance(n, int) else n
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def random_label_map(size: int, g: torch.Generator, n_shapes: tuple[int, int] = (10, 30),
                     p_foreground: float = 2 / 3, p_envelope: float = 0.5,
                     max_labels: int = 30, zoom: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """A random label map (LongTensor S^3, labels 0..K-1 consecutive, 0 = background).

    Shapes are implicit functions evaluated at affinely transformed, warped coordinates, so
    no interpolation of labels is needed and boundaries stay crisp at any canvas size.
    `zoom` (a range) crops the [-1, 1] world: an extractor trained on small canvases then
    also sees structures as large (in voxels) as on bigger patches.
    """
    z = float(_u(g, *zoom))
    grid = _grid(size, z, _u(g, -(1 - z), 1 - z, 3))
    lab = torch.zeros((size,) * 3, dtype=torch.long)
    n_target = int(torch.randint(n_shapes[0], n_shapes[1] + 1, (), generator=g))
    budget = max_labels - 3  # room for background, foreground shift and envelope
    next_label = 1
    while next_label <= min(n_target, budget):
        centre = _u(g, -0.75, 0.75, 3)
        mat = _random_rotation(g) * _u(g, 0.5, 1.5, 3)           # rotation/reflection x scale
        warp = _noise_at(grid, 3, int(torch.randint(3, 6, (), generator=g)), g)
        warp = warp * float(_u(g, 0.0, 0.12))
        q = (grid + warp - centre) @ torch.linalg.inv(mat).T      # shape-local coordinates
        axes = _u(g, 0.2, 0.7, 3)
        expo = float(_u(g, 0.8, 4.0))
        f = ((q / axes).abs() ** expo).sum(-1)                     # <= 1 inside
        kind = float(torch.rand((), generator=g))
        if kind < 0.35:                                            # superellipsoid
            masks = [f <= 1]
        elif kind < 0.55:                                          # thin shell
            r = f.clamp_min(0) ** (1 / expo)
            masks = [(r <= 1) & (r >= 1 - float(_u(g, 0.15, 0.4)))]
        elif kind < 0.8:                                           # thresholded noise blob
            noise = _smooth_noise((1,), 6, 6, g)[None]             # 1 x 1 x 6^3
            val = F.grid_sample(noise, (q / axes / 2)[None].float(), mode="bilinear",
                                padding_mode="reflection", align_corners=True)[0, 0]
            masks = [(val > float(_u(g, -0.6, 0.4))) & (f <= 1.5)]
        else:                                                      # Voronoi cells in a blob
            m = int(torch.randint(2, 5, (), generator=g))
            seeds = _u(g, -0.7, 0.7, (m, 3)) * axes
            d = torch.cdist(q.reshape(-1, 3), seeds).reshape(*f.shape, m)
            cell = d.argmin(-1)
            masks = [(f <= 1) & (cell == i) for i in range(m)]
        for mk in masks:
            if next_label > budget:
                break
            lab[mk] = next_label
            next_label += 1
    if torch.rand((), generator=g) < p_foreground:
        warp = _noise_at(grid, 3, 4, g) * float(_u(g, 0.02, 0.1))
        centre = _u(g, -0.25, 0.25, 3)
        fg = ((grid + warp - centre).norm(dim=-1) <= float(_u(g, 0.75, 1.1)))
        lab = torch.where(fg, lab + 1, torch.zeros_like(lab))
        if torch.rand((), generator=g) < p_envelope:
            k = 2 * int(torch.randint(1, 3, (), generator=g)) + 1
            f32 = fg[None, None].float()
            dil = F.max_pool3d(f32, k, 1, k // 2)[0, 0] > 0
            ero = -F.max_pool3d(-f32, k, 1, k // 2)[0, 0] > 0   # (outer faces count as inside)
            lab[dil & ~ero] = int(lab.max()) + 1
    return torch.unique(lab, return_inverse=True)[1].reshape(lab.shape)


# ---------------------------------------------------------------------------------------------
# Paired views


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def corruption_chain(seed: int):
    """anatomix.md §4.2 step 3 plus the per-view intensity augmentation of §4.3 (MONAI)."""
    import monai.transforms as T
    chain = T.Compose([
        T.RandBiasField(prob=0.98, coeff_range=(0.0, 0.075)),
        T.RandKSpaceSpikeNoise(prob=0.2),
        T.RandAdjustContrast(prob=0.5, gamma=(0.5, 2.0)),
        T.RandGaussianSmooth(prob=0.5, sigma_x=(0, 0.333), sigma_y=(0, 0.333),
                             sigma_z=(0, 0.333)),
        T.RandGibbsNoise(prob=0.5, alpha=(0.0, 0.333)),
        T.RandGaussianSharpen(prob=0.25),
        T.RandSimulateLowResolution(prob=0.333, zoom_range=(0.5, 1.0)),
        # §4.3 training-time intensity augmentation (independent per view; motion omitted)
        T.RandGaussianSmooth(prob=0.33, sigma_x=(0, 1.0), sigma_y=(0, 1.0), sigma_z=(0, 1.0)),
        T.RandGaussianNoise(prob=0.33, std=0.05),
        T.RandBiasField(prob=0.5, coeff_range=(0.0, 0.3)),
        T.RandAdjustContrast(prob=0.5, gamma=(math.exp(-0.4), math.exp(0.4))),
    ])
    chain.set_random_state(seed=seed)
    return chain


def render_view(lab: torch.Tensor, g: torch.Generator, chain) -> torch.Tensor:
    """One random 'contrast' of a label map: 1 x S^3 float in about [0, 1]."""
    n = int(lab.max()) + 1
    mean = _u(g, 25, 255, n)
    std = _u(g, 5, 20, n)
    if torch.rand((), generator=g) < 0.25:
        mean[0], std[0] = 0.0, 0.0
    img = (mean[lab] + std[lab] * torch.randn(lab.shape, generator=g)).clamp_min(0)
    img = _minmax(img)
    size = lab.shape[-1]
    tex = torch.zeros_like(img)
    for div in (4, 8, 16, 32):
        tex += _smooth_noise((1,), max(2, size // div), size, g)[0] * float(_u(g, 0, 5))
    img = _minmax(img * (1 + 0.02 * tex))
    img = torch.as_tensor(chain(img[None]), dtype=torch.float32).clamp_min(0)
    lo = img.min()
    hi = torch.quantile(img.flatten()[:: max(1, img.numel() // 200_000)], 0.9999)
    return ((img - lo) / (hi - lo).clamp_min(1e-6)).float()


# ---------------------------------------------------------------------------------------------
# Loss


class ProjectionHead(nn.Sequential):
    """anatomix.md §4.4: Linear(C->256, no bias)-BN-ReLU-Linear-BN-ReLU-Linear-BN(no affine)."""

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


def multilayer_supcon(feats: list[torch.Tensor], lab: torch.Tensor, heads: nn.ModuleList,
                      n_locations: int, tau: float, g: torch.Generator) -> torch.Tensor:
    """feats[i]: 2 x C x s^3 (the two views). Same random locations in both views."""
    total = 0.0
    for f, head in zip(feats, heads):
        s = f.shape[2:]
        lab_s = F.interpolate(lab[None, None].float(), size=s, mode="nearest").long().flatten()
        n = lab_s.numel()
        idx = torch.randperm(n, generator=g)[: min(n_locations, n)]
        flat = f.flatten(2)
        z = torch.cat((flat[0][:, idx].T, flat[1][:, idx].T))
        total = total + supcon_loss(head(z), lab_s[idx].repeat(2), tau)
    return total / len(feats)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class PretrainConfig:
    steps: int = 1000
    size: int = 48
    ngf: int = 6
    num_downs: int = 4
    seed: int = 0
    lr: float = 2e-4
    weight_decay: float = 1e-5
    tau: float = 0.33
    n_locations: int = 256
    layers: tuple = ANATOMIX_PRETRAIN_LAYERS
    n_shapes: tuple = (10, 30)
    zoom: tuple = (0.35, 1.0)  # world crop per label map: scale augmentation (see random_label_map)
    pool: int = 0  # > 0: cycle through a fixed pool of this many rendered pairs (overfit check)


def build_net(cfg: PretrainConfig) -> Unet:
    """Kaiming init from `seed` - the same start as extractors.random_extractor(ngf, seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return kaiming_init(Unet(input_nc=1, output_nc=16, num_downs=cfg.num_downs, ngf=cfg.ngf))


def pretrain(steps: int = 1000, size: int = 48, seed: int = 0, ngf: int = 6,
             log_every: int = 50, log=None, progress: bool = False, **overrides) -> dict:
    """Train and return {"net", "config", "loss" (per-step history), "wall_time_s"}.

    `log` is a callable taking one line of text (stdout/log file in the CLI).
    """
    cfg = PretrainConfig(steps=steps, size=size, seed=seed, ngf=ngf, **overrides)
    m = 2 ** cfg.num_downs
    if size % m or size < 2 * m:
        raise ValueError(f"--size must be a multiple of {m} and at least {2 * m}")
    g = torch.Generator().manual_seed(seed)
    chains = (corruption_chain(seed * 2 + 1), corruption_chain(seed * 2 + 2))
    net = build_net(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 10_000)
        heads = nn.ModuleList(ProjectionHead(c) for c in net.layer_channels(cfg.layers))
    params = list(net.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / max(1, steps))
    net.train()
    heads.train()
    history: list[float] = []
    t0 = time.time()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="pretrain-features", dynamic_ncols=True, file=sys.stdout)
    def sample_pair():
        lab = random_label_map(size, g, cfg.n_shapes, zoom=cfg.zoom)
        return lab, torch.stack([render_view(lab, g, c) for c in chains])  # 2 x 1 x S^3

    pool = [sample_pair() for _ in range(cfg.pool)]
    for step in range(steps):
        lab, x = pool[step % cfg.pool] if pool else sample_pair()
        _, feats = net(x, layers=cfg.layers)
        loss = multilayer_supcon(feats, lab, heads, cfg.n_locations, cfg.tau, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}")
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"step {step + 1}/{steps} loss {history[-1]:.4f} "
                f"mean{min(log_every, len(history))} {np.mean(history[-log_every:]):.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} elapsed {time.time() - t0:.0f}s")
    if bar is not None:
        bar.close()
    net.eval()
    return {"net": net, "config": cfg, "loss": history, "wall_time_s": time.time() - t0}


def save_extractor(result: dict, out_dir: Path, name: str, command: str,
                   invocation: str | None = None) -> tuple[Path, Path]:
    """Write `<name>.pt` (fp16 state_dict, anatomix key layout) and `<name>.json` provenance."""
    from dgbench.models.extractors import git_blob_sha1
    out_dir.mkdir(parents=True, exist_ok=True)
    pt, meta = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    state = {k: (v.half() if v.is_floating_point() else v)
             for k, v in result["net"].state_dict().items()}
    tmp = pt.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(pt)
    hist, cfg = result["loss"], result["config"]
    k = max(1, min(50, len(hist) // 5))
    info = {
        "name": name,
        "architecture": {"class": "dgbench.models.anatomix.Unet", "input_nc": 1,
                         "output_nc": 16, "num_downs": cfg.num_downs, "ngf": cfg.ngf},
        "dtype": "float16",
        "config": {**asdict(cfg), "layers": list(cfg.layers), "n_shapes": list(cfg.n_shapes),
                   "zoom": list(cfg.zoom)},
        "seed": cfg.seed, "steps": cfg.steps, "size": cfg.size,
        "initial_loss": float(np.mean(hist[:k])), "final_loss": float(np.mean(hist[-k:])),
        "loss_mean_over_steps": k,
        "wall_time_s": round(result["wall_time_s"], 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "command": command,
        "invocation": invocation,
        "git_blob_sha1": git_blob_sha1(pt),
        "recipe": "anatomix-style SupCon pretraining on procedural label maps "
                  "(dgbench/pretrain.py; anatomix.md §4-4.5)",
    }
    meta.write_text(json.dumps(info, indent=2) + "\n")
    return pt, meta


# ---------------------------------------------------------------------------------------------
# CLI


_CLI_OPTIONS = ("name", "out", "steps", "size", "ngf", "seed", "lr", "threads", "log_every")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain-features",
        help="pretrain a small anatomix-style feature extractor on procedural label maps",
        description="Contrastive (SupCon) pretraining of an anatomix-family U-Net on random "
                    "procedural label maps rendered with random contrasts. Writes "
                    "<out>/<name>.pt (fp16 state_dict), <name>.json (provenance) and "
                    "<name>.log. Use the result with build_extractor('synthanat-tiny', "
                    "weights='<out>/<name>.pt').")
    p.add_argument("--name", default="synthanat-tiny", help="output file stem")
    p.add_argument("--out", default="results/pretrained", help="output folder")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--size", type=int, default=48, help="cubic canvas side (multiple of 16)")
    p.add_argument("--ngf", type=int, default=6, help="width of the first level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-4,
                   help="AdamW peak learning rate, decayed linearly to 0 (anatomix: 2e-4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=50)
    p.set_defaults(func=cli_main)


def cli_main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / f"{args.name}.log", "w")
    # canonical, complete form of this run (every option spelled out), whatever the entry point
    command = ("dgbench pretrain-features "
               + " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                          for k, v in vars(args).items() if k in _CLI_OPTIONS))

    def log(line: str) -> None:
        from tqdm import tqdm
        tqdm.write(line, file=sys.stdout)
        logf.write(line + "\n")
        logf.flush()

    log(f"command: {command}")
    res = pretrain(steps=args.steps, size=args.size, seed=args.seed, ngf=args.ngf,
                   lr=args.lr, log_every=args.log_every, log=log, progress=True)
    pt, meta = save_extractor(res, out, args.name, command,
                              invocation=" ".join(shlex.quote(a) for a in sys.argv))
    info = json.loads(meta.read_text())
    log(f"wrote {pt} ({pt.stat().st_size / 1e6:.2f} MB, git blob sha1 {info['git_blob_sha1']}) "
        f"and {meta}; loss {info['initial_loss']:.4f} -> {info['final_loss']:.4f} in "
        f"{info['wall_time_s']:.0f}s")
    logf.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m dgbench.pretrain ...`) until cli.py lists this module."""
    parser = argparse.ArgumentParser(prog="dgbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
