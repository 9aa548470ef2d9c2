"""How much organ contrast survives a method's random intensity views? (3-D GIN vs RandConv)

On source-train volumes of the embedded benchmark (whole 48^3 volumes, min-max to [0, 1]) it
prints, over `--draws` fresh draws per view type:
  spread  max - min of the per-organ median intensities of the view (the contrast a segmenter
          must read), divided by the view's 1st-99th percentile range so that views of any
          scale compare: median and 10th percentile over volumes x draws; "raw" = the image;
  ratio   GIN only: ||gin_net(z)|| / ||z|| per sample for the z-scored image z that GIN works
          on, the random network's output (reference recipe: unscaled N(0, 1) kernels) against
          the image it is alpha-mixed with; far above 1 means the mix is mostly the random net.
Views are made as the methods make them: `gin_view` (z-score, GIN with the Frobenius rescale,
back to the image's frame) and `random_conv` followed by per-sample min-max.

    .venv/bin/python benchmarks/view_contrast.py [--volumes 8] [--draws 20] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from dgbench.data.cache import ensure_prepared
from dgbench.registry import DATASETS, load_plugins


def organ_spread(v: torch.Tensor, y: torch.Tensor) -> list[float]:
    out = []
    for vi, yi in zip(v[:, 0], y[:, 0]):
        med = [vi[yi == c].median() for c in range(1, int(yi.max()) + 1) if (yi == c).any()]
        lo, hi = torch.quantile(vi.flatten()[::7], torch.tensor([0.01, 0.99]))
        out.append(float((max(med) - min(med)) / (hi - lo).clamp_min(1e-8)))
    return out


def summary(values: list[float], fmt: str = "{:.3f}") -> str:
    v = np.asarray(values)
    return f"median {fmt.format(np.median(v))}, 10th pct {fmt.format(np.percentile(v, 10))}, " \
           f"90th pct {fmt.format(np.percentile(v, 90))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=8, help="source-train volumes (default 8)")
    ap.add_argument("--draws", type=int, default=20, help="random draws per view type (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_plugins()
    from dgbench_methods._common import minmax
    from dgbench_methods.gin import gin_net, gin_view
    from dgbench_methods.randconv import random_conv

    synth = DATASETS.get("synth")()
    prepared = ensure_prepared(synth)
    ids = synth.split().train[:args.volumes]
    x = minmax(torch.stack([torch.from_numpy(np.array(prepared.case(c).image, np.float32))[None] for c in ids]))
    y = torch.stack([torch.from_numpy(np.array(prepared.case(c).label, np.int64))[None] for c in ids])
    torch.manual_seed(args.seed)
    views = {"gin": gin_view, "randconv": lambda t: minmax(random_conv(t)[0])}
    print(f"synth source-train volumes: {len(ids)}; draws per view type: {args.draws}")
    print(f"raw       organ-median spread: {summary(organ_spread(x, y))}")
    for name, view in views.items():
        spread = sum((organ_spread(view(x), y) for _ in range(args.draws)), [])
        print(f"{name:9s} organ-median spread: {summary(spread)}")
    z = (x - x.mean(dim=(1, 2, 3, 4), keepdim=True)) / x.std(dim=(1, 2, 3, 4), keepdim=True)
    norm_z = z.flatten(1).norm(dim=1)
    ratio = sum(((gin_net(z).flatten(1).norm(dim=1) / norm_z).tolist() for _ in range(args.draws)), [])
    print(f"gin       ||gin_net(z)|| / ||z||: {summary(ratio, '{:.1f}')}")


if __name__ == "__main__":
    main()
