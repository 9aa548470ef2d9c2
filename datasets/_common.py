"""Helpers shared by the dataset adapters: junk-file filtering, numeric sorting, pairing images
with labels by id, and the split rules of the reference protocol (docs/datasets.md, Splits).

The split rules are the single source of truth for every split file: the committed lists in
``splits/`` are regenerated from them (``splits/regenerate.py``), and datasets whose case ids are
only known from the files run them at ``dgbench prepare`` time.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from dgbench.data.io import DataError

SEED = 123                 # the reference's default_rng(123), for every split and few-shot shuffle
FEWSHOT = (1, 3, 5)        # fixed few-shot subset sizes
NII = (".nii.gz", ".nii")


def visible(p: Path) -> bool:
    """False for junk from archives and file browsers: AppleDouble `._*`, `.DS_Store`, any
    dot-file, `__MACOSX/` folders, and (MSD tars) names starting with `_`."""
    return not p.name.startswith((".", "_")) and "__MACOSX" not in p.parts


def nii_stem(p: Path) -> str | None:
    """File name without its NIfTI ending, or None for a file that is not NIfTI."""
    for ending in NII:
        if p.name.endswith(ending):
            return p.name[: -len(ending)]
    return None


def nifti_files(folder: Path) -> dict[str, Path]:
    """stem -> path of the visible NIfTI files directly in a folder."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        stem = nii_stem(p)
        if stem is not None and visible(p) and p.is_file():
            if stem in out:
                raise DataError(f"{p}: the same case is also stored as {out[stem].name}; keep one of the two.")
            out[stem] = p
    return out


def find_dirs(root: Path, name: str, max_depth: int = 3) -> list[Path]:
    """Folders called `name` at most `max_depth` levels below root (archives often add a top
    folder, e.g. `TopCoW2024_Data_Release/` or `cropped/cropped/`), junk folders skipped."""
    root = Path(root)
    found, level = [], [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            if d.name == name and d != root:
                found.append(d)
                continue
            try:
                nxt += [c for c in sorted(d.iterdir()) if c.is_dir() and visible(c)]
            except OSError:
                pass
        level = nxt
    return found


def natural_key(text: str):
    """'pat7' < 'pat48', 'Case2' < 'Case10': digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text))]


def nsorted(items):
    return sorted(items, key=natural_key)


def pair_by_id(images: dict[str, Path], labels: dict[str, Path], where: Path) -> list[str]:
    """The ids that have both an image and a label. Images and labels are paired by id, never by
    list position; an image without a label (or the reverse) is an error naming the file."""
    lonely_img = nsorted(set(images) - set(labels))
    lonely_lbl = nsorted(set(labels) - set(images))
    if lonely_img:
        raise DataError(f"{images[lonely_img[0]]}: no label file for this image"
                        + (f" (and {len(lonely_img) - 1} more)" if len(lonely_img) > 1 else "")
                        + f" under {where}. Is the download complete?")
    if lonely_lbl:
        raise DataError(f"{labels[lonely_lbl[0]]}: label file without an image"
                        + (f" (and {len(lonely_lbl) - 1} more)" if len(lonely_lbl) > 1 else "")
                        + f" under {where}. Is the download complete?")
    return nsorted(images)


def shuffled(items: list, seed: int = SEED) -> list:
    """The reference's shuffle: a fresh numpy default_rng(seed).shuffle of the list as given."""
    out = list(items)
    np.random.default_rng(seed).shuffle(out)
    return out


def source_val_count(n: int) -> int:
    """docs/datasets.md, Splits: about 10% of the source subjects, at least 3, never more than half."""
    return min(max(3, math.ceil(0.1 * n)), n // 2)


def hold_out(subjects: list, seed: int = SEED, fewshot=FEWSHOT):
    """Source subjects (already in the rule's sort order) -> (train, val, few-shot prefixes).

    One default_rng(seed) permutation: its last ⌈0.1·n⌉ (≥3) subjects are the source-val hold-out;
    few-shot subsets are its first N. For a list sorted the way the reference loader returns it
    this is exactly the reference's few-shot order (docs/datasets.md, Splits), and the hold-out never
    overlaps a few-shot subset."""
    order = shuffled(subjects, seed)
    k = source_val_count(len(order))
    train_order, val = order[: len(order) - k], order[len(order) - k:]
    shots = {str(n): train_order[:n] for n in fewshot if n <= len(train_order)}
    return train_order, val, shots


def halve(cases: list, seed: int = SEED) -> tuple[list, list]:
    """Reference target split (AMOS valtest, …): shuffle once, val = first ⌊n/2⌋, test = the rest."""
    order = shuffled(cases, seed)
    return order[: len(order) // 2], order[len(order) // 2:]


def check_counts(found: dict[str, int], rule: dict, root: Path) -> None:
    """Compare the number of cases per domain with the release counts in the rule file. A split
    realised on a partial download would silently differ from everyone else's, so it is refused."""
    expected = rule.get("expected") or {}
    wrong = {d: (found.get(d, 0), n) for d, n in expected.items() if n is not None and found.get(d, 0) != n}
    if wrong:
        raise DataError(f"{root}: " + ", ".join(f"{d}: {got} labelled cases found, the release has {n}"
                                                for d, (got, n) in wrong.items())
                        + f". The split is derived from the files (rule {rule.get('path')}), so it would "
                          f"differ from the reference one. Complete the download (or point --root at the "
                          f"dataset's top folder).")


def payload(train, val, test: dict, target_val: dict | None = None, fewshot: dict | None = None) -> dict:
    """A split payload with ids in natural order (few-shot lists keep their frozen order)."""
    return {"train": nsorted(train), "val": nsorted(val),
            "target_val": {d: nsorted(v) for d, v in (target_val or {}).items()},
            "test": {d: nsorted(v) for d, v in test.items()},
            "fewshot": {k: list(v) for k, v in (fewshot or {}).items()}}


def reference_train_defaults(patch_size) -> dict:
    """The MaskGen reference recipe (Diaz et al. 2026), with the dataset's crop size."""
    return {"steps": 250_000, "batch_size": 4, "lr": 2e-4, "patch_size": list(patch_size),
            "backbone": "unet", "backbone_kwargs": {"width": 20, "levels": 5},
            "val_every": 1000, "ckpt_every": 1000}
