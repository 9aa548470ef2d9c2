"""How fast is `dgbench prepare`? Writes a synthetic `folder` dataset of realistic CT volumes
(int16 HU, .nii.gz) and times prepare() with 1 and 2 worker processes, each into a fresh cache.

Reports cases/s and MB/s, where MB counts the uncompressed image + label voxels read. By default
the volumes are resampled as AMOS would be (0.8 x 0.8 x 2.0 mm -> 1.0 x 1.0 x 1.5 mm); --native
keeps the native spacing (load + validate + normalise + write only).

    .venv/bin/python benchmarks/prepare_speed.py [--n 20] [--shape 256 256 128] [--workers 1 2] [--native]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def write_dataset(root: Path, n: int, shape, spacing, target_spacing) -> float:
    """n CT volumes in the nnU-Net layout + domains.csv + dgbench.json; returns MB of voxels per case."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    body = (zz ** 2 + yy ** 2 / 0.6 + xx ** 2 / 4) < 0.8          # an elliptic "abdomen"
    organ = ((zz - 0.2) ** 2 + (yy + 0.1) ** 2 + xx ** 2) < 0.08
    rows = []
    for i in range(n):
        img = np.where(body, 40, -1000).astype(np.float32) + np.where(organ, 60, 0)
        img += rng.normal(0, 20, shape).astype(np.float32)
        lbl = (organ.astype(np.uint8) + (body & (xx > 0.6)).astype(np.uint8) * 2).astype(np.uint8)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(img.astype(np.int16), affine), str(root / "imagesTr" / f"ct_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lbl, affine), str(root / "labelsTr" / f"ct_{i:03d}.nii.gz"))
        rows.append(f"ct_{i:03d},{'siteA' if i < n - n // 4 else 'siteB'}")
    (root / "domains.csv").write_text("case,domain\n" + "\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "flank": 2},
                                                   "file_ending": ".nii.gz"}))
    (root / "dgbench.json").write_text(json.dumps({"name": "prepare-speed", "modality": {"siteA": "ct", "siteB": "ct"},
                                                   "source": ["siteA"], "target": ["siteB"],
                                                   "spacing": list(target_spacing) if target_spacing else None}))
    return float(np.prod(shape)) * (2 + 1) / 1e6     # int16 image + uint8 label


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="number of volumes (default 20)")
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 256, 128], help="voxels (default 256 256 128)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    ap.add_argument("--native", action="store_true", help="no resampling (target spacing = native)")
    ap.add_argument("--keep", help="write the data here and keep it")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dgbench-prepare-speed-"))
    root = tmp / "data"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    spacing = (0.8, 0.8, 2.0)
    target = None if args.native else (1.0, 1.0, 1.5)
    t0 = time.perf_counter()
    mb_case = write_dataset(root, args.n, tuple(args.shape), spacing, target)
    gz = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / 1e6
    print(f"wrote {args.n} volumes {'x'.join(map(str, args.shape))} int16 CT ({mb_case:.1f} MB of voxels each, "
          f"{gz:.0f} MB .nii.gz in all) in {time.perf_counter() - t0:.1f} s; "
          f"{'native spacing' if target is None else f'resampled {spacing} -> {target} mm'}; "
          f"{os.cpu_count()} CPUs visible")

    from dgbench.data.cache import prepare
    from dgbench_datasets.folder import FolderDataset
    try:
        for w in args.workers:
            cache = tmp / f"cache-w{w}"
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["DGBENCH_CACHE"] = str(cache)
            os.environ["DGBENCH_FOLDER_ROOT"] = str(root)
            adapter = FolderDataset()
            t = time.perf_counter()
            index = prepare(adapter, root, workers=w, progress=False)
            dt = time.perf_counter() - t
            n = len(index["cases"])
            out_mb = sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e6
            print(f"workers {w}: {n} cases in {dt:.1f} s = {n / dt:.2f} cases/s, {n * mb_case / dt:.1f} MB/s of "
                  f"voxels read ({gz / dt:.1f} MB/s of .nii.gz), {out_mb:.0f} MB cache written")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
