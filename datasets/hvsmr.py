"""HVSMR-2.0, paediatric congenital heart disease CMR: mild + moderate -> severe (docs/datasets.md).

Read as distributed (Figshare collection 7074755; unzipping often nests `cropped/cropped/`, so the
files are searched for below the root):

    orig/patN_orig.nii.gz                 orig/patN_orig_seg.nii.gz                 (+ _seg_endpoints, ignored)
    cropped/patN_cropped.nii.gz           cropped/patN_cropped_seg.nii.gz           <- used, as in the reference
    cropped_norm/patN_cropped_norm.nii.gz cropped_norm/patN_cropped_seg.nii.gz
    hvsmr_clinical.csv                    Pat, Category (Mild / Moderate / Severe), ...

`DGBENCH_HVSMR_VARIANT=orig|cropped_norm` reads another image variant (it gets its own cache).
Subjects pat0-pat59 are not zero-padded: sorted numerically for display; the split derivation uses
the reference's lexicographic file-name order (`pat30_…` before `pat3_…`).

The domain of a case is its severity: the `Category` column of hvsmr_clinical.csv when the file is
present (it must agree with the reference's 23-subject training list), else the training list
itself (its first 12 entries taken as mild, the next 11 as moderate: an inference; docs/datasets.md).
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError
from dgbench.registry import register_dataset
from dgbench_datasets._common import hold_out, nsorted, payload, reference_train_defaults, shuffled, visible

# the reference training list, verbatim and in its order (docs/datasets.md)
TRAIN_LIST = ["pat0", "pat1", "pat2", "pat5", "pat6", "pat8", "pat10", "pat11", "pat13", "pat18", "pat26",
              "pat27", "pat7", "pat14", "pat15", "pat19", "pat23", "pat24", "pat25", "pat29", "pat48", "pat17",
              "pat12"]
MILD, MODERATE = TRAIN_LIST[:12], TRAIN_LIST[12:]     # [U] presumed 12 mild + 11 moderate, in that order
N_TARGET_VAL = 18
VARIANTS = {"cropped": "cropped", "orig": "orig", "cropped_norm": "cropped"}   # image variant -> label stem


def ref_order(subjects) -> list[str]:
    """The reference's order: lexicographic on the image file names (patN_cropped.nii.gz)."""
    return sorted(subjects, key=lambda s: f"{s}_cropped.nii.gz")


def split_payload(all_subjects: list[str]) -> dict:
    severe = [s for s in ref_order(all_subjects) if s not in TRAIN_LIST]
    order = shuffled(severe)
    tr, val, shots = hold_out(ref_order(TRAIN_LIST))
    return payload(tr, val, {"severe": order[N_TARGET_VAL:]}, {"severe": order[:N_TARGET_VAL]}, shots)


RULE = ("source = the reference's 23-subject training list (mild + moderate); the 37 others (severe) in "
        "lexicographic file-name order, shuffled once with numpy default_rng(123): first 18 target-val, last 19 "
        "test. Source-val = the last 3 of a default_rng(123) shuffle of the training list in file-name order; "
        "few-shot N = the first N of that shuffle (exactly the reference's few-shot order).")


@register_dataset("hvsmr")
class HvsmrDataset(DatasetAdapter):
    name = "hvsmr"
    description = "HVSMR-2.0 paediatric CHD cardiac MR, mild+moderate -> severe (8 structures)"
    classes = {0: "background", 1: "LV", 2: "RV", 3: "LA", 4: "RA", 5: "AO", 6: "PA", 7: "SVC", 8: "IVC"}
    domains = {"mild": "mr", "moderate": "mr", "severe": "mr"}
    source_domains = ("mild", "moderate")
    target_domains = ("severe",)
    spacing = (0.77, 0.72, 0.72)
    sided = False           # chambers are labelled by morphology, not side; the reference flips
    train_defaults = reference_train_defaults((128, 160, 128))
    download = ("https://doi.org/10.6084/m9.figshare.c.7074755 (Figshare collection: cropped.zip and "
                "hvsmr_clinical.csv); paper: doi 10.1038/s41597-024-03469-9")
    licence = "CC BY 4.0 (Figshare item metadata)"

    def __init__(self):
        self.variant = os.environ.get("DGBENCH_HVSMR_VARIANT", "cropped")
        self.cache_tag = "" if self.variant == "cropped" else self.variant
        self.notes: list[str] = []

    def severity(self, root: Path) -> dict[str, str]:
        csvs = [p for p in sorted(Path(root).rglob("hvsmr_clinical.csv")) if visible(p)]
        if not csvs:
            self.notes.append("hvsmr_clinical.csv not found: severity taken from the reference training list "
                              "(first 12 mild, next 11 moderate, others severe)")
            return {**{p: "mild" for p in MILD}, **{p: "moderate" for p in MODERATE}}
        path = csvs[0]
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        cols = {c.strip().lower(): c for c in (rows[0] if rows else {})}
        if "pat" not in cols or "category" not in cols:
            raise DataError(f"{path}: expected columns 'Pat' and 'Category', found {list(cols)}.")
        out = {}
        for r in rows:
            cat = (r[cols["category"]] or "").strip().lower()
            if cat not in self.domains:
                raise DataError(f"{path}: patient {r[cols['pat']]} has Category {r[cols['category']]!r}; "
                                f"expected Mild, Moderate or Severe.")
            out[f"pat{int(float(r[cols['pat']]))}"] = cat
        source = {p for p, c in out.items() if c != "severe"}
        if source != set(TRAIN_LIST):
            raise DataError(f"{path}: mild + moderate patients {nsorted(source ^ set(TRAIN_LIST))[:6]} disagree "
                            f"with the reference's 23-subject training list; the committed split follows the "
                            f"paper. Check the CSV version.")
        return out

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        self.notes = []
        if self.variant not in VARIANTS:
            raise DataError(f"DGBENCH_HVSMR_VARIANT={self.variant!r}: expected one of {sorted(VARIANTS)}.")
        lbl_stem = VARIANTS[self.variant]
        img_re = re.compile(rf"^(pat\d+)_{self.variant}\.nii(\.gz)?$")
        images: dict[str, Path] = {}
        for p in sorted(root.rglob(f"pat*_{self.variant}.nii*")):
            m = img_re.match(p.name)
            if not m or not visible(p) or not all(visible(q) for q in p.relative_to(root).parents):
                continue
            if m.group(1) in images:
                raise DataError(f"{p}: {m.group(1)} is also at {images[m.group(1)]}; keep one copy of the "
                                f"{self.variant} images.")
            images[m.group(1)] = p
        if not images:
            raise DataError(f"{root}: no {self.variant} images (patN_{self.variant}.nii.gz) below this folder; "
                            f"unzip {self.variant}.zip from the HVSMR-2.0 Figshare collection here.")
        severity = self.severity(root)
        cases = []
        for pid in nsorted(images):
            img = images[pid]
            lbl = next((img.with_name(f"{pid}_{lbl_stem}_seg{e}") for e in (".nii.gz", ".nii")
                        if img.with_name(f"{pid}_{lbl_stem}_seg{e}").exists()), None)
            if lbl is None:
                raise DataError(f"{img}: no label {pid}_{lbl_stem}_seg.nii.gz next to it. Is the download complete?")
            cases.append(Case(pid, severity.get(pid, "severe"), img, lbl))
        return cases

    @staticmethod
    def committed_payload() -> dict:
        return {"dataset": "hvsmr", "rule": RULE, **split_payload([f"pat{i}" for i in range(60)])}
