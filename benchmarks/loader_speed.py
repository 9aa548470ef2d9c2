"""CPU cost of the training data path, per-sample MONAI augmentation against crop-only + device.

    python benchmarks/loader_speed.py [--sizes 128x128x128,192x192x128] [--samples 12] [--batches 3]

Rows, each at each patch size:
- `loader, per-sample MONAI (before)`: `PatchDataset` with the standard augmentation at
  aug_prob 0.33 (train.aug_on=cpu): ms of one CPU thread per sample;
- `loader, crop only (after)`: `PatchDataset` without transforms (train.aug_on=device);
- `device augmentation, batch of 4 (CPU)`: `DeviceAugmentation` of the standard pipeline on a
  batch of 4 crops, here on the CPU (one thread): ms per batch, to compare with a GPU later.
The two loaders read the same samples (same seed and indices), interleaved in one process,
so load from other work hits both alike. The volumes are synthetic arrays larger than the
patch (memory-mapped .npy like the prepared cache, read once before timing), with a few
labelled boxes for foreground oversampling.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dgbench.data.cache import PreparedCase
from dgbench.data.device_aug import DeviceAugmentation, standard_device_augmentation
from dgbench.data.sampling import PatchDataset, standard_augmentation


class Volumes:
    """A stand-in for `cache.Prepared`: memory-mapped cases with foreground coordinates."""

    def __init__(self, folder: Path, shape, n: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.cases = {}
        for i in range(n):
            img = rng.normal(0.0, 1.0, shape).astype(np.float32)
            lbl = np.zeros(shape, np.uint8)
            for c in (1, 2, 3):
                lo = [int(rng.integers(0, s // 2)) for s in shape]
                lbl[tuple(slice(a, a + s // 4) for a, s in zip(lo, shape))] = c
            np.save(folder / f"c{i}.img.npy", img)
            np.save(folder / f"c{i}.lbl.npy", lbl)
            fg = {c: np.argwhere(lbl == c)[::97] for c in (1, 2, 3)}
            self.cases[f"c{i}"] = PreparedCase(f"c{i}", "src", np.load(folder / f"c{i}.img.npy", mmap_mode="r"),
                                               np.load(folder / f"c{i}.lbl.npy", mmap_mode="r"), fg)
            np.asarray(self.cases[f"c{i}"].image).sum()      # into the page cache, as in steady state

    def case(self, case_id: str) -> PreparedCase:
        return self.cases[case_id]


def measure(patch, samples: int, batches: int, aug_prob: float = 0.33) -> dict:
    shape = tuple(int(s * 1.5) for s in patch)
    with tempfile.TemporaryDirectory() as tmp:
        vols = Volumes(Path(tmp), shape)
        ids = list(vols.cases)
        sp, it = standard_augmentation(patch, aug_prob, sided=False)
        before = PatchDataset(vols, ids, patch, 0, 0.33, sp + it, 10 ** 6)
        after = PatchDataset(vols, ids, patch, 0, 0.33, None, 10 ** 6)
        dsp, dit = standard_device_augmentation(patch, aug_prob, sided=False)
        aug = DeviceAugmentation(dsp + dit, seed=0)
        t_before, t_after = [], []
        for k in range(samples):                   # interleaved: same load on both
            t = time.perf_counter()
            before[k]
            t_before.append(time.perf_counter() - t)
            t = time.perf_counter()
            after[k]
            t_after.append(time.perf_counter() - t)
        t_aug = []
        for b in range(batches):
            items = [after[4 * b + i] for i in range(4)]
            x = torch.stack([s["image"] for s in items])
            y = torch.stack([s["label"] for s in items])
            t = time.perf_counter()
            aug(x, y, [s["index"] for s in items])
            t_aug.append(time.perf_counter() - t)
    return {"before": 1e3 * float(np.mean(t_before)), "after": 1e3 * float(np.mean(t_after)),
            "aug": 1e3 * float(np.mean(t_aug))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="128x128x128,192x192x128")
    p.add_argument("--samples", type=int, default=12, help="samples per loader and size (mean reported)")
    p.add_argument("--batches", type=int, default=3, help="device-augmentation batches of 4 per size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one loader worker)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    print(f"torch {torch.__version__}, {a.threads} thread(s), aug_prob 0.33, {a.samples} samples, "
          f"{a.batches} batches of 4")
    print("| patch | loader, per-sample MONAI (before) ms/sample | loader, crop only (after) ms/sample "
          "| speed-up | device augmentation on CPU, ms per batch of 4 |")
    print("|---|---|---|---|---|")
    for patch in sizes:
        r = measure(patch, a.samples, a.batches)
        print(f"| {'x'.join(map(str, patch))} | {r['before']:.1f} | {r['after']:.2f} | "
              f"{r['before'] / r['after']:.0f}x | {r['aug']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
