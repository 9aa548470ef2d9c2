"""Multi-site prostate T2w MRI (SAML / MS-Net collection): site shift (docs/datasets.md).

Read as distributed (the SAML zip; site folders may sit one or two levels down):

    <root>/ISBI/Case00.nii.gz  Case00_segmentation.nii.gz ...     RUNMC (3 T), Case00-29
    <root>/ISBI_1.5/...                                           BMC (1.5 T), Case00-29
    <root>/I2CVB/...  <root>/UCL/...  <root>/BIDMC/...  <root>/HK/...

Domains are the sites, named as in the papers: ISBI -> RUNMC, ISBI_1.5 -> BMC. Case ids are
`<SITE>_<case>` (case numbers repeat across sites and are not contiguous). The ISBI masks hold
{0, 1, 2} (central gland, peripheral zone): every label is binarised with `label > 0`, as SAML does.

Spacing: the reference preset 0.51 x 0.52 x 0.125 mm is kept as written, although 0.125 mm is far
finer than the 1.25-4 mm slices (docs/datasets.md): `dgbench prepare prostate` reports the zoom.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError
from dgbench.registry import register_dataset
from dgbench_datasets._common import find_dirs, hold_out, nifti_files, payload, reference_train_defaults

SITE_FOLDERS = {"ISBI": "RUNMC", "ISBI_1.5": "BMC", "I2CVB": "I2CVB", "UCL": "UCL", "BIDMC": "BIDMC", "HK": "HK"}
# the release, per site (docs/datasets.md): the committed split lists exactly these
RELEASE = {"RUNMC": range(0, 30), "BMC": range(0, 30), "I2CVB": range(0, 19), "UCL": [1, *range(26, 38)],
           "BIDMC": [i for i in range(0, 13) if i != 2], "HK": range(38, 50)}
SOURCE, TARGET_VAL, TEST = ("RUNMC", "I2CVB"), ("UCL", "HK"), ("BIDMC", "BMC")
CASE_RE = re.compile(r"^(case\d+)$", re.I)
SEG_RE = re.compile(r"^(case\d+)_segmentation$", re.I)


def split_payload(ids_by_site: dict[str, list[str]]) -> dict:
    source = sorted(c for s in SOURCE for c in ids_by_site[s])
    tr, val, shots = hold_out(source)
    return payload(tr, val, {s: ids_by_site[s] for s in TEST}, {s: ids_by_site[s] for s in TARGET_VAL}, shots)


RULE = ("no shuffling (reference): source = RUNMC + I2CVB (49), target-val = UCL + HK (25), test = BIDMC + BMC "
        "(42). Source-val = the last 5 (ceil 10%) of a numpy default_rng(123) shuffle of the sorted source case "
        "ids; few-shot N = the first N of that shuffle.")


@register_dataset("prostate")
class ProstateDataset(DatasetAdapter):
    name = "prostate"
    description = "multi-site prostate T2w MRI, RUNMC+I2CVB -> UCL/HK (val), BIDMC/BMC (test)"
    classes = {0: "background", 1: "prostate"}
    label_remap = {2: 1}        # documents the ISBI {0,1,2}; remap_labels binarises every value > 0
    domains = {s: "mr" for s in ("RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK")}
    source_domains = SOURCE
    target_domains = TARGET_VAL + TEST
    spacing = (0.51, 0.52, 0.125)
    sided = False
    train_defaults = reference_train_defaults((256, 256, 64))
    download = ("https://liuquande.github.io/SAML/ (the multi-site prostate zip); repo: "
                "https://github.com/liuquande/SAML")
    licence = ("re-packaged NCI-ISBI 2013, I2CVB and PROMISE12 data: the terms of those sources apply "
               "(research use; check each before redistributing)")

    def remap_labels(self, labels):
        arr = np.asarray(labels)
        if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
            return labels                         # let check_labels name the file: not a label map
        return (arr > 0).astype(np.uint8)

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        self.notes = []
        cases = []
        for folder, site in SITE_FOLDERS.items():
            dirs = [root / folder] if (root / folder).is_dir() else find_dirs(root, folder, 3)
            if not dirs:
                self.notes.append(f"site folder {folder}/ ({site}) not found")
                continue
            if len(dirs) > 1:
                raise DataError(f"{root}: several {folder}/ folders ({', '.join(map(str, dirs))}); keep one copy.")
            files = nifti_files(dirs[0])
            images = {CASE_RE.match(s).group(1): p for s, p in files.items() if CASE_RE.match(s)}
            labels = {SEG_RE.match(s).group(1): p for s, p in files.items() if SEG_RE.match(s)}
            odd = [p for s, p in files.items() if not (CASE_RE.match(s) or SEG_RE.match(s))]
            if odd:
                raise DataError(f"{odd[0]}: not a prostate case file (CaseNN.nii.gz / CaseNN_segmentation.nii.gz); "
                                f"move foreign files out of {dirs[0]}.")
            for key in sorted(set(images) | set(labels)):
                if key not in labels:
                    raise DataError(f"{images[key]}: no {key}_segmentation.nii.gz next to it. Is the download complete?")
                if key not in images:
                    raise DataError(f"{labels[key]}: segmentation without its image {key}.nii.gz.")
                cid = f"{site}_Case{key[4:]}"          # Case00 / case00 -> RUNMC_Case00
                cases.append(Case(cid, site, images[key], labels[key]))
        if not cases:
            raise DataError(f"{root}: none of the site folders {', '.join(SITE_FOLDERS)} found; point --root at "
                            f"the unzipped multi-site prostate data.")
        return cases

    @staticmethod
    def committed_payload() -> dict:
        ids = {s: [f"{s}_Case{i:02d}" for i in nums] for s, nums in RELEASE.items()}
        return {"dataset": "prostate", "rule": RULE, **split_payload(ids)}
