"""AMOS 2022, abdominal multi-organ segmentation, CT -> MRI (docs/datasets.md).

Read as distributed (`amos22.zip` from Zenodo 7262581):

    amos22/dataset.json
    amos22/imagesTr/amos_0001.nii.gz   amos22/labelsTr/amos_0001.nii.gz     (200 CT + 40 MRI)
    amos22/imagesVa/amos_0008.nii.gz   amos22/labelsVa/amos_0008.nii.gz     (100 CT + 20 MRI)
    amos22/imagesTs/...                                                      (no labels: skipped)

ID < 500 is CT, ID >= 500 is MRI (the readme says so). IDs are 4-digit, not contiguous; Tr and Va
interleave. `__MACOSX/` and AppleDouble files are skipped. An nnU-Net conversion with `_0000`
image suffixes is read as well.

The MRI ids are not published anywhere we could check, so the split is derived from the files by
the committed rule `splits/amos.rule.json` and realised once by `dgbench prepare amos`.
"""
from __future__ import annotations

import re
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError
from dgbench.registry import register_dataset
from dgbench_datasets._common import (check_counts, find_dirs, halve, hold_out, nifti_files, nsorted,
                                      pair_by_id, payload, reference_train_defaults)

ID_RE = re.compile(r"^amos_(\d+)$")
MRI_FROM = 500


@register_dataset("amos")
class AmosDataset(DatasetAdapter):
    name = "amos"
    description = "AMOS 2022 abdominal organs, CT -> MRI (15 organs)"
    classes = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder",
               5: "esophagus", 6: "liver", 7: "stomach", 8: "aorta", 9: "postcava", 10: "pancreas",
               11: "right adrenal gland", 12: "left adrenal gland", 13: "duodenum", 14: "bladder",
               15: "prostate/uterus"}
    domains = {"ct": "ct", "mri": "mr"}
    source_domains = ("ct",)
    target_domains = ("mri",)
    spacing = (1.0, 1.0, 1.5)
    sided = True            # left/right kidneys and adrenals: no flips (the MaskGen reference recipe, Diaz et al. 2026)
    train_defaults = reference_train_defaults((192, 192, 128))
    download = ("https://zenodo.org/records/7262581 (amos22.zip, with validation labels); "
                "challenge: https://amos22.grand-challenge.org")
    licence = ("unclear: one registry lists CC BY 4.0, the NeurIPS 2022 page CC BY-NC; treat as "
               "non-commercial and redistribute nothing until the Zenodo terms have been read")

    def dataset_dir(self, root: Path) -> Path:
        root = Path(root)
        if (root / "imagesTr").is_dir():
            return root
        dirs = {d.parent for d in find_dirs(root, "imagesTr", 2) if (d.parent / "labelsTr").is_dir()}
        if len(dirs) != 1:
            raise DataError(f"{root}: expected one AMOS folder with imagesTr/ and labelsTr/ (the unzipped "
                            f"amos22/), found {len(dirs)}{': ' + ', '.join(map(str, sorted(dirs))) if dirs else ''}.")
        return dirs.pop()

    def find_cases(self, root: Path) -> list[Case]:
        base = self.dataset_dir(root)
        self.notes = []
        cases: dict[str, Case] = {}
        for part in ("Tr", "Va"):
            img_dir, lbl_dir = base / f"images{part}", base / f"labels{part}"
            if not img_dir.is_dir():
                raise DataError(f"{img_dir}: folder missing; the AMOS release has imagesTr/ and imagesVa/ "
                                f"(the latter with labelsVa/ since the post-challenge release on Zenodo).")
            if not lbl_dir.is_dir():
                raise DataError(f"{lbl_dir}: folder missing. The first AMOS release had no validation labels; "
                                f"use amos22.zip from Zenodo 7262581 (post-challenge release with labelsVa/).")
            images = {s[:-5] if s.endswith("_0000") else s: p for s, p in nifti_files(img_dir).items()}
            labels = nifti_files(lbl_dir)
            for folder, files in ((img_dir, images), (lbl_dir, labels)):
                odd = [s for s in files if not ID_RE.match(s)]
                if odd:
                    raise DataError(f"{files[odd[0]]}: not an AMOS file name (amos_NNNN.nii.gz); move foreign "
                                    f"files out of {folder}.")
            for cid in pair_by_id(images, labels, base):
                if cid in cases:
                    raise DataError(f"{images[cid]}: case {cid} is also in {cases[cid].image.parent}; "
                                    f"each AMOS id appears once.")
                domain = "mri" if int(ID_RE.match(cid).group(1)) >= MRI_FROM else "ct"
                cases[cid] = Case(cid, domain, images[cid], labels[cid])
        n_ts = len(nifti_files(base / "imagesTs"))
        if n_ts:
            self.notes.append(f"imagesTs: {n_ts} unlabelled cases skipped")
        return [cases[c] for c in nsorted(cases)]

    def derive_split(self, cases: list[Case], rule: dict) -> dict:
        ct = sorted(c.case_id for c in cases if c.domain == "ct")      # sorted by file name
        mri = sorted(c.case_id for c in cases if c.domain == "mri")
        where = cases[0].image.parent.parent if cases else "the dataset root"
        check_counts({"ct": len(ct), "mri": len(mri)}, rule, where)
        train, val, shots = hold_out(ct, rule.get("seed", 123), rule.get("fewshot", ()))
        target_val, test = halve(mri, rule.get("seed", 123))
        return payload(train, val, {"mri": test}, {"mri": target_val}, shots)
