"""TopCoW 2024, Circle of Willis vessels, CTA -> MRA (docs/datasets.md).

Read as distributed (`TopCoW2024_Data_Release.zip`, Zenodo 15692630; the zip may add that top folder):

    imagesTr/topcow_ct_001_0000.nii.gz  topcow_mr_001_0000.nii.gz ...   CTA and MRA of a patient share the number
    cow_seg_labelsTr/topcow_ct_001.nii.gz  topcow_mr_001.nii.gz ...      multiclass masks (no _0000)
    roi_loc_labelsTr/, ... (other tasks: ignored)

The TopCoW 2023 naming (`topcow_{ct,mr}_whole_NNN_0000.nii.gz`, multiclass masks in
`mul_labelsTr/` or `labelsTr/`, `_roi_` crops ignored) is read as well; the two releases are never
mixed. Case ids are `topcow_ct_NNN` / `topcow_mr_NNN` in both.

Labels: 1-12 vessels, 13 and 14 unused, 15 = 3rd-A2 -> remapped to 13 (14 classes incl. background).

Patient numbers are not confirmed to be contiguous (a third-party script reads 001-090 and 131-165),
so the split is derived from the files by `splits/topcow.rule.json` and realised by `dgbench prepare`.
"""
from __future__ import annotations

import re
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError
from dgbench.registry import register_dataset
from dgbench_datasets._common import (check_counts, find_dirs, hold_out, nifti_files, nsorted, payload,
                                      reference_train_defaults, shuffled)

NAME_2024 = re.compile(r"^topcow_(ct|mr)_(\d+)$")
NAME_2023 = re.compile(r"^topcow_(ct|mr)_whole_(\d+)$")
ROI_2023 = re.compile(r"^topcow_(ct|mr)_roi_(\d+)$")
LABEL_DIRS = ("cow_seg_labelsTr", "mul_labelsTr", "labelsTr")     # 2024, then 2023 multiclass
DOMAIN = {"ct": "cta", "mr": "mra"}


@register_dataset("topcow")
class TopcowDataset(DatasetAdapter):
    name = "topcow"
    description = "TopCoW 2024 Circle of Willis vessels, CTA -> MRA (13 vessel classes)"
    classes = {0: "background", 1: "BA", 2: "R-PCA", 3: "L-PCA", 4: "R-ICA", 5: "R-MCA", 6: "L-ICA",
               7: "L-MCA", 8: "R-Pcom", 9: "L-Pcom", 10: "Acom", 11: "R-ACA", 12: "L-ACA", 13: "3rd-A2"}
    label_remap = {15: 13}
    domains = {"cta": "ct", "mra": "mr"}
    source_domains = ("cta",)
    target_domains = ("mra",)
    spacing = (0.3, 0.3, 0.6)
    sided = True            # left/right vessels: no flips (the MaskGen reference recipe, Diaz et al. 2026)
    train_defaults = reference_train_defaults((192, 160, 128))
    download = ("https://zenodo.org/records/15692630 (TopCoW2024_Data_Release.zip); "
                "challenge: https://topcow24.grand-challenge.org")
    licence = "opendata.swiss terms of use (https://opendata.swiss/en/terms-of-use), as restated by third parties"

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        self.notes = []
        img_dirs = [root / "imagesTr"] if (root / "imagesTr").is_dir() else find_dirs(root, "imagesTr", 3)
        if not img_dirs:
            raise DataError(f"{root}: no imagesTr/ folder; point --root at the unzipped TopCoW release "
                            f"(TopCoW2024_Data_Release/).")
        cases: dict[str, Case] = {}
        releases = set()
        for img_dir in img_dirs:
            lbl_dir = next((img_dir.parent / d for d in LABEL_DIRS if (img_dir.parent / d).is_dir()), None)
            if lbl_dir is None:
                hint = " (only binary masks found: bin_labelsTr/)" if (img_dir.parent / "bin_labelsTr").is_dir() else ""
                raise DataError(f"{img_dir.parent}: no multiclass label folder ({', '.join(LABEL_DIRS)}){hint}.")
            images = {s[:-5]: p for s, p in nifti_files(img_dir).items() if s.endswith("_0000")}
            labels = nifti_files(lbl_dir)
            for kind, files, folder in (("image", images, img_dir), ("label", labels, lbl_dir)):
                for stem, path in files.items():
                    if ROI_2023.match(stem):
                        continue
                    m = NAME_2024.match(stem) or NAME_2023.match(stem)
                    if not m:
                        raise DataError(f"{path}: not a TopCoW {kind} name (topcow_ct_NNN{'_0000' if kind == 'image' else ''}"
                                        f".nii.gz); move foreign files out of {folder}.")
                    releases.add(2024 if NAME_2024.match(stem) else 2023)
            for stem, path in images.items():
                m = NAME_2024.match(stem) or NAME_2023.match(stem)
                if not m:
                    continue
                if stem not in labels:
                    raise DataError(f"{path}: no label {stem}.nii.gz in {lbl_dir}. Is the download complete?")
                cid = f"topcow_{m.group(1)}_{m.group(2)}"
                if cid in cases:
                    raise DataError(f"{path}: case {cid} is also at {cases[cid].image}; keep one copy.")
                cases[cid] = Case(cid, DOMAIN[m.group(1)], path, labels[stem])
            lonely = [s for s in labels if (NAME_2024.match(s) or NAME_2023.match(s)) and s not in images]
            if lonely:
                raise DataError(f"{labels[lonely[0]]}: label without an image {lonely[0]}_0000.nii.gz in {img_dir}.")
        if len(releases) > 1:
            raise DataError(f"{root}: holds both TopCoW 2023 (topcow_*_whole_*) and 2024 (topcow_*_NNN) files; "
                            f"the releases differ, use one of them.")
        if releases == {2023}:
            self.notes.append("TopCoW 2023 naming read (the reference protocol uses the 2024 release)")
        return [cases[c] for c in nsorted(cases)]

    def derive_split(self, cases: list[Case], rule: dict) -> dict:
        by_dom: dict[str, dict[int, str]] = {"cta": {}, "mra": {}}
        for c in cases:
            by_dom[c.domain][int(c.case_id.rsplit("_", 1)[1])] = c.case_id
        where = cases[0].image.parent.parent if cases else "the dataset root"
        check_counts({d: len(v) for d, v in by_dom.items()}, rule, where)
        n_train, n_tv = rule["cut"]["train"], rule["cut"]["target_val"]
        subjects = shuffled(sorted(by_dom["mra"]), rule.get("seed", 123))   # sorted MR subject numbers
        train_subj = subjects[:n_train]
        missing = [s for s in train_subj if s not in by_dom["cta"]]
        if missing:
            raise DataError(f"{where}: source subjects {missing[:5]} have an MRA but no CTA "
                            f"(topcow_ct_{missing[0]:03d}); the split trains on their CTA.")
        tr, val, shots = hold_out(sorted(train_subj), rule.get("seed", 123), rule.get("fewshot", ()))
        cta = lambda subs: [by_dom["cta"][s] for s in subs]
        mra = lambda subs: [by_dom["mra"][s] for s in subs]
        return payload(cta(tr), cta(val), {"mra": mra(subjects[n_train + n_tv:])},
                       {"mra": mra(subjects[n_train:n_train + n_tv])}, {k: cta(v) for k, v in shots.items()})
