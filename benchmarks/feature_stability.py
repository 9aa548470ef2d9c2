"""How contrast-stable are an extractor's features? (anatomix.md §4.5, sanity checks 2-3)

Held-out procedural label maps (a seed range pretraining never draws, and fewer, larger
shapes) are rendered with two fixed contrasts that the pretraining pipeline does not use:
  A: monotone  - tissue k gets level 0.1 + 0.8 * rank_k / (K - 1), light Gaussian noise;
  B: inverted  - the opposite ordering, gamma 0.7, a smooth multiplicative bias field,
                 slight blur and stronger noise (a "different scanner / sequence").
Background is dark in both. Reported per extractor:
  cos        mean voxel-wise cosine similarity of the instance-normalised features of A and B
             (same voxel, both contrasts) - 1 would be perfectly contrast-invariant;
  cos_gap    mean cosine between same-label voxel pairs minus different-label pairs, across
             the two contrasts (> 0: features identify tissue regardless of contrast);
  dice_AA    linear probe (multinomial logistic regression per voxel) trained and tested on A:
             what the features can express at all;
  dice_AB    the same probe tested on B: does the label read-out survive the contrast swap?
             (averaged with B -> A).
"Raw intensity" runs the same probe on the instance-normalised image (1 channel; its
cosine columns are not shown, a 1-channel cosine is only a sign). Dice counts labels that
cover at least 1 % of the volume.

Usage: python benchmarks/feature_stability.py [--maps 6] [--sizes 32,64] [--extractors a,b,...]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from dgbench.pretrain import _smooth_noise, random_label_map

HELD_OUT_SEED = 987_654  # pretraining draws label maps from torch.Generator(seed) with small seeds


def render_fixed(lab: torch.Tensor, kind: str, g: torch.Generator, rank: torch.Tensor) -> torch.Tensor:
    """Contrast A ('monotone') or B ('inverted'); returns 1 x 1 x S^3 in [0, 1]."""
    k = int(lab.max()) + 1
    level = 0.1 + 0.8 * rank.float() / max(1, k - 2)   # rank over the k-1 tissue labels
    if kind == "B":
        level = (1.0 - level) ** 0.7
    level = torch.cat((torch.zeros(1), level))         # background dark in both
    img = level[lab]
    size = lab.shape[-1]
    if kind == "B":
        bias = torch.exp(0.25 * _smooth_noise((1,), 3, size, g)[0])
        img = img * bias
        img = F.avg_pool3d(F.pad(img[None, None], (1,) * 6, mode="replicate"), 3, 1)[0, 0] * 0.3 \
            + img * 0.7
        img = img + 0.05 * torch.randn(img.shape, generator=g)
    else:
        img = img + 0.02 * torch.randn(img.shape, generator=g)
    img = img.clamp_min(0)
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-6)
    return img[None, None]


def _features(extractor, x: torch.Tensor) -> torch.Tensor:
    """Instance-normalised features (as MaskGen feeds them), C x N."""
    f = x if extractor is None else extractor(x)
    f = F.instance_norm(f.float())
    return f[0].flatten(1)


def _fit_probe(f: torch.Tensor, y: torch.Tensor, k: int, iters: int = 60) -> torch.nn.Linear:
    """Multinomial logistic regression (L-BFGS, light L2) on features C x N."""
    lin = torch.nn.Linear(f.shape[0], k)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=iters, line_search_fn="strong_wolfe")
    x = f.T

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + 1e-4 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _dice(pred: torch.Tensor, y: torch.Tensor, k: int, min_frac: float = 0.01) -> float:
    """Mean Dice over the foreground labels that cover at least `min_frac` of the volume
    (overlapping random shapes leave slivers whose Dice would only add noise)."""
    ds = []
    for c in range(1, k):
        t = y == c
        if t.sum() >= min_frac * y.numel():
            p = pred == c
            ds.append(2 * (p & t).sum().item() / (p.sum().item() + t.sum().item()))
    return sum(ds) / max(1, len(ds))


def measure_stability(extractor=None, n_maps: int = 6, size: int = 64, seed: int = HELD_OUT_SEED,
                      n_shapes: tuple[int, int] = (4, 8), n_pairs: int = 4000) -> dict:
    """Contrast-stability metrics of `extractor` (a FrozenExtractor; None = raw intensity).

    The held-out maps and renderings depend only on `seed`, so every extractor sees the
    same images.
    """
    g = torch.Generator().manual_seed(seed)
    out = {"cos": [], "cos_gap": [], "dice_AA": [], "dice_AB": []}
    for _ in range(n_maps):
        lab = random_label_map(size, g, n_shapes=n_shapes, p_envelope=0.0)
        k = int(lab.max()) + 1
        rank = torch.randperm(k - 1, generator=g)
        xa = render_fixed(lab, "A", g, rank)
        xb = render_fixed(lab, "B", g, rank)
        fa, fb = _features(extractor, xa), _features(extractor, xb)
        y = lab.flatten()
        out["cos"].append(F.cosine_similarity(fa, fb, dim=0).mean().item())
        i = torch.randint(0, y.numel(), (n_pairs,), generator=g)
        j = torch.randint(0, y.numel(), (n_pairs,), generator=g)
        c = F.cosine_similarity(fa[:, i], fb[:, j], dim=0)
        same = y[i] == y[j]
        if same.any() and (~same).any():
            out["cos_gap"].append((c[same].mean() - c[~same].mean()).item())
        probe_a, probe_b = _fit_probe(fa, y, k), _fit_probe(fb, y, k)
        with torch.no_grad():
            out["dice_AA"].append(_dice(probe_a(fa.T).argmax(1), y, k))
            out["dice_AB"].append(0.5 * (_dice(probe_a(fb.T).argmax(1), y, k)
                                         + _dice(probe_b(fa.T).argmax(1), y, k)))
    return {key: sum(v) / max(1, len(v)) for key, v in out.items()} | {"n_maps": n_maps,
                                                                         "size": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=6)
    ap.add_argument("--sizes", default="64", help="comma-separated cube sides, e.g. 32,64")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extractors", default="synthanat-tiny,synthanat-tiny-random,anatomix",
                    help="comma-separated registry names; raw intensity is always added")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dgbench.models.extractors import ExtractorWeightsError, build_extractor

    feats = []
    for name in args.extractors.split(","):
        try:
            feats.append((name.strip(), build_extractor(name.strip())))
        except ExtractorWeightsError as e:
            print(f"skipping {name}: {str(e).splitlines()[0][:160]}", file=sys.stderr)
    feats.append(("raw intensity", None))
    print(f"\nfeature stability: {args.maps} held-out maps, seed {args.seed}, "
          "contrast A (monotone) vs B (inverted)\n")
    print("| size | features | cos(A,B) | cos gap same-diff | probe Dice A->A "
          "| probe Dice A<->B | time s |")
    print("|---|---|---|---|---|---|---|")
    for size in (int(v) for v in args.sizes.split(",")):
        for name, ext in feats:
            t = time.time()
            r = measure_stability(ext, args.maps, size, args.seed)
            cos = ("n/a | n/a" if ext is None      # 1 channel: a cosine is only a sign
                   else f"{r['cos']:.3f} | {r['cos_gap']:.3f}")
            print(f"| {size}^3 | {name} | {cos} | {r['dice_AA']:.3f} | {r['dice_AB']:.3f} "
                  f"| {time.time() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
