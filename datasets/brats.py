"""MSD Task01 BrainTumour ("MSD-BraTS"): T1w / T1gd / T2w -> FLAIR (docs/datasets.md).

Read as distributed (`Task01_BrainTumour.tar`):

    Task01_BrainTumour/dataset.json                       "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    Task01_BrainTumour/imagesTr/BRATS_001.nii.gz ...      4-D (x, y, z, channel)
    Task01_BrainTumour/labelsTr/BRATS_001.nii.gz ...      3-D, MSD labels 1 edema, 2 non-enhancing, 3 enhancing
    Task01_BrainTumour/imagesTs/...                        no labels: skipped

AppleDouble files (`._BRATS_001.nii.gz`) and names starting with `_` are skipped. The channel of
each domain is looked up by name in dataset.json, never assumed.

One subject gives several samples, but the engine's Case has one domain: every (subject, channel)
is its own case, `BRATS_001_t1`, `BRATS_001_t1gd`, `BRATS_001_t2`, `BRATS_001_flair`, all sharing
the subject's label file. Splits hold whole subjects out (source-val, few-shot, target).
"""
from __future__ import annotations

import re
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError, read_json
from dgbench.registry import register_dataset
from dgbench_datasets._common import (find_dirs, hold_out, nifti_files, pair_by_id, payload,
                                      reference_train_defaults, shuffled)

ID_RE = re.compile(r"^BRATS_(\d+)$")
# domain -> names the channel may carry in dataset.json's "modality" (lower case)
CHANNEL_NAMES = {"flair": ("flair",), "t1": ("t1w", "t1", "t1-weighted", "native"),
                 "t1gd": ("t1gd", "t1ce", "t1c", "t1-gd", "t1wgad", "t1w-gd"), "t2": ("t2w", "t2", "t2-weighted")}
SOURCE = ("t2", "t1", "t1gd")    # the reference's per-subject sample order (T2, T1w, T1gd)
TARGET = "flair"
CUT = (340, 48)                 # first 340 shuffled subjects train, next 48 target-val, rest test


def split_payload(subjects: list[str], prefix: str = "BRATS") -> dict:
    """docs/datasets.md, Splits: sorted subject numbers, one default_rng(123) shuffle, cut 340/48/rest.
    Source subjects give (T2, T1w, T1gd) samples; the source-val hold-out and the few-shot subsets
    count subjects (the reference counts samples for few-shot: a documented difference)."""
    order = shuffled(sorted(subjects))
    n_train, n_tv = CUT
    train_subj, tv_subj, test_subj = order[:n_train], order[n_train:n_train + n_tv], order[n_train + n_tv:]
    tr, val, shots = hold_out(sorted(train_subj))
    ids = lambda subs, doms: [f"{prefix}_{s}_{d}" for s in subs for d in doms]
    return payload(ids(tr, SOURCE), ids(val, SOURCE), {TARGET: ids(test_subj, (TARGET,))},
                   {TARGET: ids(tv_subj, (TARGET,))}, {k: ids(v, SOURCE) for k, v in shots.items()})


RULE = ("subjects 001-484 (BRATS_NNN) sorted, shuffled once with numpy default_rng(123): first 340 source "
        "(T2w, T1w, T1gd samples), next 48 target-val (FLAIR), last 96 test (FLAIR). Source-val = the last "
        "34 (ceil 10%) of a default_rng(123) shuffle of the sorted 340 source subjects; few-shot N = the first "
        "N subjects of that shuffle, all three samples each (the reference counts samples; docs/datasets.md, Splits).")


@register_dataset("brats")
class BratsDataset(DatasetAdapter):
    name = "brats"
    description = "MSD Task01 brain tumour, T1w/T1gd/T2w -> FLAIR (edema, non-enhancing, enhancing)"
    classes = {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"}
    domains = {"t1": "mr", "t1gd": "mr", "t2": "mr", "flair": "mr"}
    source_domains = SOURCE
    target_domains = (TARGET,)
    spacing = (1.0, 1.0, 1.0)
    sided = False
    train_defaults = reference_train_defaults((128, 128, 128))
    download = "http://medicaldecathlon.com (Task01_BrainTumour.tar, about 7 GB; no registration)"
    licence = "CC BY-SA 4.0 (dataset.json 'licence' field)"

    def dataset_dir(self, root: Path) -> Path:
        root = Path(root)
        if (root / "imagesTr").is_dir():
            return root
        dirs = {d.parent for d in find_dirs(root, "imagesTr", 2)}
        if len(dirs) != 1:
            raise DataError(f"{root}: expected one Task01_BrainTumour folder with dataset.json, imagesTr/ and "
                            f"labelsTr/, found {len(dirs)}.")
        return dirs.pop()

    def channels(self, base: Path) -> dict[str, int]:
        """domain -> channel index, by name from dataset.json (never hard-coded)."""
        path = base / "dataset.json"
        meta = read_json(path, "not found. The MSD dataset.json names the channels of the 4-D images; "
                               "restore it from the tar.")
        if str(meta.get("tensorImageSize", "4D")).upper() != "4D":
            raise DataError(f"{path}: tensorImageSize is {meta.get('tensorImageSize')!r}; MSD Task01 images are 4D.")
        names = {str(v).strip().lower(): int(k) for k, v in (meta.get("modality") or {}).items()}
        out = {}
        for dom, aliases in CHANNEL_NAMES.items():
            hits = [names[a] for a in aliases if a in names]
            if not hits:
                raise DataError(f"{path}: no channel named like {dom!r} ({', '.join(aliases)}) in 'modality' "
                                f"{meta.get('modality')}; cannot pick the {dom} channel of the 4-D images.")
            out[dom] = hits[0]
        return out

    def find_cases(self, root: Path) -> list[Case]:
        base = self.dataset_dir(root)
        self.notes = []
        channel = self.channels(base)
        images, labels = nifti_files(base / "imagesTr"), nifti_files(base / "labelsTr")
        for folder, files in ((base / "imagesTr", images), (base / "labelsTr", labels)):
            odd = [s for s in files if not ID_RE.match(s)]
            if odd:
                raise DataError(f"{files[odd[0]]}: not an MSD BraTS file name (BRATS_NNN.nii.gz); move foreign "
                                f"files out of {folder}.")
        cases = []
        for sid in pair_by_id(images, labels, base):
            for dom in (*SOURCE, TARGET):
                cases.append(Case(f"{sid}_{dom}", dom, images[sid], labels[sid], channel=channel[dom]))
        n_ts = len(nifti_files(base / "imagesTs"))
        if n_ts:
            self.notes.append(f"imagesTs: {n_ts} unlabelled cases skipped")
        return cases

    @staticmethod
    def committed_payload() -> dict:
        return {"dataset": "brats", "rule": RULE,
                **split_payload([f"{i:03d}" for i in range(1, 485)])}
