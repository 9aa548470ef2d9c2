"""The extractor stability gate: are an extractor's features contrast-stable at every patch size?

Held-out procedural label maps (a seed range pretraining never draws, and fewer, larger
shapes) are rendered with two fixed contrasts that the pretraining pipeline does not use:
  A: monotone  - tissue k gets level 0.1 + 0.8 * rank_k / (K - 1), light Gaussian noise;
  B: inverted  - the opposite ordering, gamma 0.7, a smooth multiplicative bias field,
                 slight blur and stronger noise (a "different scanner / sequence").
Background is dark in both. The extractor runs in eval mode, as MaskGen runs it. Reported:
  cos        mean voxel-wise cosine similarity of the instance-normalised features of A and B
             (same voxel, both contrasts) - 1 would be perfectly contrast-invariant;
  cos_gap    mean cosine between same-label voxel pairs minus different-label pairs, across
             the two contrasts (> 0: features identify tissue regardless of contrast);
  dice_AA    linear probe (multinomial logistic regression per voxel) trained and tested on A:
             what the features can express at all;
  dice_AB    the same probe tested on B: does the label read-out survive the contrast swap?
             (averaged with B -> A);
  min_std    the smallest per-channel standard deviation of the raw (pre-normalisation)
             features over any map: a dead channel is constant and instance norm only
             amplifies its noise.
"Raw intensity" runs the same probe on the instance-normalised image (1 channel; its
cosine columns are not shown, a 1-channel cosine is only a sign). Dice counts labels that
cover at least 1 % of the volume.

The gate (GATE below), at every size: cos >= 0.8, dice_AB >= raw intensity's dice_AB + 0.25,
min_std >= 1e-3. `--gate NAME` exits non-zero when NAME fails it anywhere.

`--synth` adds a diagnostic that is *not* part of the gate (the extractor must never be tuned
to the embedded benchmark): on `synth` source-train cases (centred crops, min-max as in
training), the ratio of between-class to within-class variance of each instance-normalised
feature channel, averaged over channels, beside the same ratio for the raw intensity.

Usage: python benchmarks/feature_stability.py [--maps 4] [--sizes 32,48,64,96]
       [--extractors synthanat-v2,synthanat-tiny,...|name=path.pt] [--gate synthanat-v2] [--synth]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from dgbench.procedural import _smooth_noise, random_label_map

HELD_OUT_SEED = 987_654  # pretraining seeds its generators from hashes of (seed, step), never this
GATE = {"cos": 0.8, "probe_margin": 0.25, "min_std": 1e-3}


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


def _features(extractor, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Instance-normalised features (as MaskGen feeds them), C x N, and the smallest raw
    per-channel standard deviation."""
    f = (x if extractor is None else extractor(x)).float()
    min_std = f[0].flatten(1).std(dim=1).min().item()
    return F.instance_norm(f)[0].flatten(1), min_std


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
    out = {"cos": [], "cos_gap": [], "dice_AA": [], "dice_AB": [], "min_std": []}
    for _ in range(n_maps):
        lab = random_label_map(size, g, n_shapes=n_shapes, p_envelope=0.0)
        k = int(lab.max()) + 1
        rank = torch.randperm(k - 1, generator=g)
        xa = render_fixed(lab, "A", g, rank)
        xb = render_fixed(lab, "B", g, rank)
        (fa, sa), (fb, sb) = _features(extractor, xa), _features(extractor, xb)
        out["min_std"].append(min(sa, sb))
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
    res = {key: sum(v) / max(1, len(v)) for key, v in out.items()}
    return res | {"min_std": min(out["min_std"]), "n_maps": n_maps, "size": size}


def gate_failures(r: dict, raw: dict) -> list[str]:
    """Which gate conditions `r` (an extractor's result) fails, given raw intensity's `raw`."""
    bad = []
    if not r["cos"] >= GATE["cos"]:
        bad.append(f"cos {r['cos']:.3f} < {GATE['cos']}")
    if not r["dice_AB"] >= raw["dice_AB"] + GATE["probe_margin"]:
        bad.append(f"probe A<->B {r['dice_AB']:.3f} < raw {raw['dice_AB']:.3f} + {GATE['probe_margin']}")
    if not r["min_std"] >= GATE["min_std"]:
        bad.append(f"dead channel (std {r['min_std']:.2g})")
    return bad


def synth_separability(extractor, size: int = 32, n_cases: int = 4) -> float:
    """Between-class over within-class variance of each instance-normalised channel on `synth`
    source-train crops, averaged over channels and cases (None = the raw intensity)."""
    import numpy as np

    from dgbench.data.cache import ensure_prepared
    from dgbench.data.sampling import crop
    from dgbench.registry import DATASETS
    adapter = DATASETS.get("synth")()
    prepared = ensure_prepared(adapter)
    ratios = []
    for case_id in adapter.split().train[:n_cases]:
        case = prepared.case(case_id)
        start = (np.array(case.image.shape) - size) // 2
        img = torch.as_tensor(crop(case.image, start, (size,) * 3), dtype=torch.float32)
        lab = torch.as_tensor(crop(case.label, start, (size,) * 3)).long().flatten()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-6)
        f, _ = _features(extractor, img[None, None])
        classes = [c for c in lab.unique() if (lab == c).sum() >= 10]
        means = torch.stack([f[:, lab == c].mean(1) for c in classes], 1)     # C x K
        within = torch.stack([f[:, lab == c].var(1) for c in classes], 1).mean(1)
        ratios.append((means.var(1) / within.clamp_min(1e-8)).mean().item())
    return sum(ratios) / len(ratios)


def _load(spec: str):
    """`name` (a registered extractor) or `name=path` (that extractor family with a weights file)."""
    from dgbench.models.extractors import build_extractor
    name, _, path = spec.partition("=")
    return build_extractor(name.strip(), path.strip() or None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--maps", type=int, default=4, help="held-out label maps per size")
    ap.add_argument("--sizes", default="32,48,64,96", help="comma-separated cube sides")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extractors", default="synthanat-v2,synthanat-tiny,synthanat-v2-random,anatomix",
                    help="comma-separated: registry names, or name=weights.pt; raw intensity is "
                         "always added (unavailable ones, e.g. anatomix offline, are skipped)")
    ap.add_argument("--gate", default=None, help="exit 1 unless this extractor passes the gate at every size")
    ap.add_argument("--synth", action="store_true",
                    help="also print the synth separability diagnostic (not part of the gate)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dgbench.models.extractors import ExtractorWeightsError

    feats = []
    for spec in args.extractors.split(","):
        try:
            feats.append((spec.strip(), _load(spec)))
        except ExtractorWeightsError as e:
            print(f"skipping {spec}: {str(e).splitlines()[0][:160]}", file=sys.stderr)
    if args.gate and args.gate not in [n for n, _ in feats]:
        ap.error(f"--gate {args.gate} is not among the extractors measured")
    feats.append(("raw intensity", None))
    print(f"\nfeature stability: {args.maps} held-out maps per size, seed {args.seed}, "
          f"contrast A (monotone) vs B (inverted), eval mode\n"
          f"gate: cos >= {GATE['cos']}, probe A<->B >= raw + {GATE['probe_margin']}, "
          f"min channel std >= {GATE['min_std']}\n")
    print("| size | features | cos(A,B) | cos gap same-diff | probe Dice A->A "
          "| probe Dice A<->B | min channel std | gate | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    failed = {}
    for size in (int(v) for v in args.sizes.split(",")):
        rows = []
        for name, ext in feats:
            t = time.time()
            rows.append((name, ext, measure_stability(ext, args.maps, size, args.seed), time.time() - t))
        raw = rows[-1][2]
        for name, ext, r, dt in rows:
            if ext is None:      # 1 channel: a cosine is only a sign
                cos, std, verdict = "n/a | n/a", "n/a", ""
            else:
                bad = gate_failures(r, raw)
                failed.setdefault(name, []).extend(f"{size}^3: {b}" for b in bad)
                cos, std = f"{r['cos']:.3f} | {r['cos_gap']:.3f}", f"{r['min_std']:.3g}"
                verdict = "pass" if not bad else "FAIL"
            print(f"| {size}^3 | {name} | {cos} | {r['dice_AA']:.3f} | {r['dice_AB']:.3f} "
                  f"| {std} | {verdict} | {dt:.0f} |", flush=True)
    if args.synth:
        print("\nsynth source-train crops (diagnostic only, not a gate): between/within-class "
              "variance ratio, mean over channels\n")
        print("| crop | " + " | ".join(n for n, _ in feats) + " |")
        print("|---|" + "---|" * len(feats))
        for size in (32, 48):
            print(f"| {size}^3 | " + " | ".join(f"{synth_separability(e, size):.2f}" for _, e in feats)
                  + " |", flush=True)
    print()
    for name, _ in feats[:-1]:
        print(f"{name}: " + ("passes the gate at every size" if not failed.get(name)
                             else "FAILS the gate: " + "; ".join(failed[name])))
    return 1 if args.gate and failed.get(args.gate) else 0


if __name__ == "__main__":
    sys.exit(main())
