"""PanDG / PancreasDG, pancreas MRI: venous-phase T1 -> out-of-phase (docs/datasets.md).

PROVISIONAL: the public release has not been inspected (layout, counts and licence unverified).
Two layouts are read:

1. the reference code's layout: ``<root>/{train,val,test}/{images,labels}/*.nii.gz``
   (train = venous phase = source; val and test = out-of-phase = target-val and test);
2. an nnU-Net layout per site and sequence, as in the group's nnUNetDG code:
   ``<root>/.../<DOMAIN>/imagesTr/<case>_0000.nii.gz`` and ``<DOMAIN>/labelsTr/<case>.nii.gz``,
   e.g. ``EMC``, ``NU``, ``IU`` (venous) and ``OutPhaseEMC``, ``OutPhaseNU`` (out-of-phase: any
   folder whose name says out-/opposed-phase). Case ids are ``<DOMAIN>_<case>``.

Images and labels are paired by id (an image's `_0000` suffix and a label's `_seg`/`_label`/
`_mask`/`_gt` suffix are ignored for pairing), never by list position.

Case ids are unknown without the data: the split is derived from the files by
``splits/pandg.rule.json`` and realised by ``dgbench prepare pandg``.
"""
from __future__ import annotations

import re
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError
from dgbench.registry import register_dataset
from dgbench_datasets._common import (check_counts, find_dirs, halve, hold_out, nifti_files, nsorted,
                                      pair_by_id, payload, reference_train_defaults)

OUT_PHASE = re.compile(r"out.?of.?phase|out.?phase|opposed|\boop", re.I)
LABEL_SUFFIX = re.compile(r"_(seg|label|labels|mask|gt)$", re.I)
REF_DOMAIN = {"train": "venous", "val": "out-of-phase", "test": "out-of-phase"}


def _image_id(stem: str) -> str:
    return stem[:-5] if stem.endswith("_0000") else stem


def _label_id(stem: str) -> str:
    return LABEL_SUFFIX.sub("", _image_id(stem))


@register_dataset("pandg")
class PandgDataset(DatasetAdapter):
    name = "pandg"
    description = "PanDG pancreas MRI, venous phase -> out-of-phase (PROVISIONAL: release layout unverified)"
    classes = {0: "background", 1: "pancreas"}
    domains = {"venous": "mr", "out-of-phase": "mr"}
    source_domains = ("venous",)
    target_domains = ("out-of-phase",)
    spacing = (1.09, 1.09, 4.4)
    sided = False
    train_defaults = reference_train_defaults((256, 256, 64))
    download = ("https://pancreasdg.netlify.app (project page; Hugging Face dataset ppplllkkk/PancreasDG, "
                "release announced after peer review)")
    licence = "not found: unknown until the release is published; redistribute nothing"

    def _pairs(self, img_dir: Path, lbl_dir: Path) -> list[tuple[str, Path, Path]]:
        images = {_image_id(s): p for s, p in nifti_files(img_dir).items()}
        labels = {}
        for s, p in nifti_files(lbl_dir).items():
            if _label_id(s) in labels:
                raise DataError(f"{p}: two label files for case {_label_id(s)} in {lbl_dir}.")
            labels[_label_id(s)] = p
        return [(i, images[i], labels[i]) for i in pair_by_id(images, labels, img_dir.parent)]

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        self.notes = ["PanDG support is provisional: the layout and domain assignment are unverified"]
        ref = [d for d in ([root / "train"] if (root / "train" / "images").is_dir() else find_dirs(root, "train", 2))
               if (d / "images").is_dir()]
        site = [d for d in find_dirs(root, "imagesTr", 4) if (d.parent / "labelsTr").is_dir()]
        if ref and site:
            raise DataError(f"{root}: holds both the reference layout ({ref[0]}) and per-site nnU-Net folders "
                            f"({site[0].parent}); point --root at one of them.")
        cases: dict[str, Case] = {}

        def add(cid, domain, img, lbl):
            if cid in cases:
                raise DataError(f"{img}: case id {cid} also used by {cases[cid].image}; case ids must be unique.")
            cases[cid] = Case(cid, domain, img, lbl)

        if ref:
            if len(ref) > 1:
                raise DataError(f"{root}: several train/ folders ({', '.join(map(str, ref))}); keep one copy.")
            base = ref[0].parent
            for part, domain in REF_DOMAIN.items():
                if not (base / part / "images").is_dir():
                    raise DataError(f"{base / part / 'images'}: folder missing (reference layout "
                                    f"{{train,val,test}}/{{images,labels}}).")
                for cid, img, lbl in self._pairs(base / part / "images", base / part / "labels"):
                    add(cid, domain, img, lbl)
        elif site:
            for img_dir in site:
                dom_name = img_dir.parent.name
                domain = "out-of-phase" if OUT_PHASE.search(dom_name) else "venous"
                for cid, img, lbl in self._pairs(img_dir, img_dir.parent / "labelsTr"):
                    add(f"{dom_name}_{cid}", domain, img, lbl)
        else:
            raise DataError(f"{root}: no PanDG data found. Expected {{train,val,test}}/{{images,labels}}/ or "
                            f"per-domain nnU-Net folders <DOMAIN>/imagesTr + labelsTr (docs/datasets.md).")
        return [cases[c] for c in nsorted(cases)]

    def derive_split(self, cases: list[Case], rule: dict) -> dict:
        seed = rule.get("seed", 123)
        where = cases[0].image.parent.parent.parent if cases else "the dataset root"
        check_counts({d: sum(c.domain == d for c in cases) for d in self.domains}, rule, where)
        role = {c.case_id: c.image.parent.parent.name if c.image.parent.name == "images" else "" for c in cases}
        source = sorted(c.case_id for c in cases if c.domain == "venous")
        target = sorted(c.case_id for c in cases if c.domain == "out-of-phase")
        if any(role.values()):      # reference layout: its own val/test folders
            target_val = [c for c in target if role[c] == "val"]
            test = [c for c in target if role[c] == "test"]
        else:
            target_val, test = halve(target, seed)
        tr, val, shots = hold_out(source, seed, rule.get("fewshot", ()))
        return payload(tr, val, {"out-of-phase": test}, {"out-of-phase": target_val}, shots)
