"""nnU-Net-style folder with a domain manifest: the layout of the embedded benchmark, and of a
user's own dataset.

    ROOT/dataset.json            nnU-Net v2 style: {"labels": {"background": 0, ...}, "file_ending": ".nii.gz"}
    ROOT/imagesTr/<case>_0000.nii.gz
    ROOT/labelsTr/<case>.nii.gz
    ROOT/domains.csv             case,domain   (one row per case)
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter
from dgbench.data.io import DataError


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_")) and "__MACOSX" not in p.parts


class NnunetFolderAdapter(DatasetAdapter):
    def read_manifest(self, root: Path) -> dict[str, str]:
        path = Path(root) / "domains.csv"
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise DataError(f"{path}: domain manifest not found. Write a CSV with columns case,domain "
                            f"(one row per case).") from None
        if not rows or not {"case", "domain"} <= set(rows[0]):
            raise DataError(f"{path}: expected columns 'case,domain'.")
        return {r["case"].strip(): r["domain"].strip() for r in rows}

    def read_dataset_json(self, root: Path) -> dict:
        path = Path(root) / "dataset.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: dataset.json not found (nnU-Net layout expected).") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e}).") from e

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        meta = self.read_dataset_json(root)
        ending = meta.get("file_ending", ".nii.gz")
        domains = self.read_manifest(root)
        images = {p.name[: -len("_0000" + ending)]: p for p in sorted((root / "imagesTr").glob(f"*_0000{ending}"))
                  if _visible(p)}
        cases = []
        for case_id, domain in domains.items():
            if domain not in self.domains:
                raise DataError(f"{root / 'domains.csv'}: case {case_id} has unknown domain {domain!r}; "
                                f"known: {sorted(self.domains)}.")
            if case_id not in images:
                raise DataError(f"{root / 'imagesTr'}: no image {case_id}_0000{ending} for case {case_id} "
                                f"listed in domains.csv.")
            cases.append(Case(case_id, domain, images[case_id], root / "labelsTr" / f"{case_id}{ending}"))
        return cases
