"""nnU-Net-style folder with a domain manifest: the layout of the embedded benchmark, and of a
user's own dataset (registered as `folder`, see docs/datasets.md for a worked example).

    ROOT/dataset.json            nnU-Net style: {"labels": {"background": 0, ...}, "file_ending": ".nii.gz"}
    ROOT/imagesTr/<case>_0000.nii.gz
    ROOT/labelsTr/<case>.nii.gz
    ROOT/domains.csv             case,domain[,split]   (one row per case; split optional)
    ROOT/dgbench.json            (folder only) modality per domain, source/target domains, spacing, ...
                                 (or the same fields under "dgbench" in dataset.json)

The `folder` dataset is built by the registry without arguments, so it finds its root itself:
`DGBENCH_FOLDER_ROOT` if set, else the root of the last `dgbench prepare folder --root PATH`
(recorded next to the cache). Its split is derived from domains.csv by a fixed rule and realised
next to the cache by `prepare`, like the datasets whose case ids are only known from the files.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from pathlib import Path

from dgbench.data.adapter import Case, DatasetAdapter, cache_dir, content_sha1
from dgbench.data.io import DataError, read_json
from dgbench.registry import register_dataset
from dgbench_datasets._common import FEWSHOT, SEED, hold_out, nsorted, payload, shuffled


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_")) and "__MACOSX" not in p.parts


class NnunetFolderAdapter(DatasetAdapter):
    def read_manifest_rows(self, root: Path) -> list[dict[str, str]]:
        path = Path(root) / "domains.csv"
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise DataError(f"{path}: domain manifest not found. Write a CSV with columns case,domain "
                            f"(one row per case).") from None
        if not rows or not {"case", "domain"} <= set(rows[0]):
            raise DataError(f"{path}: expected columns 'case,domain'.")
        seen = set()
        for r in rows:
            case = (r["case"] or "").strip()
            if case in seen:
                raise DataError(f"{path}: case {case} is listed twice.")
            seen.add(case)
        return [{k: (v or "").strip() for k, v in r.items() if k} for r in rows]

    def read_manifest(self, root: Path) -> dict[str, str]:
        return {r["case"]: r["domain"] for r in self.read_manifest_rows(root)}

    def read_dataset_json(self, root: Path) -> dict:
        path = Path(root) / "dataset.json"
        return read_json(path, "dataset.json not found (nnU-Net layout expected).")

    def find_cases(self, root: Path) -> list[Case]:
        root = Path(root)
        meta = self.read_dataset_json(root)
        ending = meta.get("file_ending", ".nii.gz")
        domains = self.read_manifest(root)
        images = {p.name[: -len("_0000" + ending)]: p for p in sorted((root / "imagesTr").glob(f"*_0000{ending}"))
                  if _visible(p)}
        labels = {p.name[: -len(ending)] for p in (root / "labelsTr").glob(f"*{ending}") if _visible(p)}
        for folder, ids in (("imagesTr", set(images)), ("labelsTr", labels)):
            unlisted = sorted(ids - set(domains))
            if unlisted:                     # never skipped silently: a forgotten row is data lost
                raise DataError(f"{root / folder}: {len(unlisted)} case(s) have files here but no row in "
                                f"{root / 'domains.csv'}: {unlisted[:5]}{' ...' if len(unlisted) > 5 else ''}. "
                                f"Add a row (case,domain) for each, or move their files out of {folder}.")
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


# ---------------------------------------------------------------------------------------------
# `folder`: a user's own dataset
# ---------------------------------------------------------------------------------------------
ROOT_ENV = "DGBENCH_FOLDER_ROOT"
ROLES = ("train", "val", "target_val", "test")
FOLDER_RULE = ("derived from domains.csv: if it has a `split` column (train / val / target_val / test) that is "
               "the split; otherwise source cases in natural id order are shuffled once with numpy "
               "default_rng(123), the last ceil(10%) (at least 3, at most half) are source-val; each target "
               "domain is shuffled once with default_rng(123) and its first floor(target_val_fraction * n) cases "
               "are target-val, the rest test. Few-shot N = the first N of the source shuffle.")


def root_pointer() -> Path:
    """Where `dgbench prepare folder --root PATH` records the root, for later commands."""
    return cache_dir() / "splits" / "folder.root.json"


@register_dataset("folder")
class FolderDataset(NnunetFolderAdapter):
    """Your own data in the nnU-Net layout + domains.csv + dgbench.json (docs/datasets.md)."""
    name = "folder"
    description = (f"your own nnU-Net-style folder + domains.csv + dgbench.json: not configured "
                   f"(set {ROOT_ENV}=PATH or run `dgbench prepare folder --root PATH`)")
    download = "your own data (docs/datasets.md, 'Your own data')"
    licence = "yours"

    def __init__(self, root: Path | None = None):
        self.root: Path | None = None
        self.config: dict = {}
        self.config_error: DataError | None = None
        self.cache_tag = ""
        self.notes: list[str] = []
        self.manifest_roles: dict[str, str] = {}
        if root is None:
            root = os.environ.get(ROOT_ENV) or None
        if root is None and root_pointer().exists():
            try:
                root = json.loads(root_pointer().read_text())["root"]
            except (json.JSONDecodeError, KeyError):
                root = None
        if root is not None:
            try:
                self.configure(Path(root))
            except DataError as e:       # `dgbench datasets` must list it anyway; split() reports it
                self.config_error = e

    # -- configuration ---------------------------------------------------------------------------
    def read_config(self, root: Path) -> tuple[dict, Path]:
        path = root / "dgbench.json"
        if path.exists():
            try:
                return json.loads(path.read_text()), path
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e}).") from e
        meta = self.read_dataset_json(root)
        if isinstance(meta.get("dgbench"), dict):
            return meta["dgbench"], root / "dataset.json"
        raise DataError(f"{path}: not found (nor a \"dgbench\" entry in dataset.json). It names each domain's "
                        f"modality and the source/target domains, e.g. "
                        f'{{"modality": {{"siteA": "ct", "siteB": "mr"}}, "source": ["siteA"], "target": ["siteB"]}}.')

    def configure(self, root: Path) -> None:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{root}: folder not found ({ROOT_ENV} or the recorded --root).")
        cfg, where = self.read_config(root)
        meta = self.read_dataset_json(root)
        modality = cfg.get("modality") or {}
        if not isinstance(modality, dict) or not modality:
            raise DataError(f"{where}: 'modality' must map each domain to \"ct\" or \"mr\".")
        bad = {d: m for d, m in modality.items() if m not in ("ct", "mr")}
        if bad:
            raise DataError(f"{where}: modality {bad} unknown; use \"ct\" (window -1024..1024 HU) or \"mr\" "
                            f"(per-volume min-max).")
        source, target = list(cfg.get("source") or []), list(cfg.get("target") or [])
        unknown = [d for d in source + target if d not in modality]
        if not source or not target or unknown or set(source) & set(target):
            raise DataError(f"{where}: 'source' and 'target' must be non-empty, disjoint lists of domains named in "
                            f"'modality' {sorted(modality)}" + (f" (unknown: {unknown})" if unknown else "") + ".")
        classes = self._classes(cfg, meta, where)
        spacing = cfg.get("spacing")
        if spacing is not None and (len(spacing) != 3 or min(float(s) for s in spacing) <= 0):
            raise DataError(f"{where}: 'spacing' must be three positive numbers (mm) or null for native spacing.")
        window = cfg.get("ct_window")
        if window is not None and (len(window) != 2 or float(window[0]) >= float(window[1])):
            raise DataError(f"{where}: 'ct_window' must be [low, high] in HU with low < high.")
        frac = float(cfg.get("target_val_fraction", 0.0))
        if not 0.0 <= frac < 1.0:
            raise DataError(f"{where}: 'target_val_fraction' must be in [0, 1).")
        self.root, self.config = root, cfg
        self.classes = classes
        self.domains = {str(d): str(m) for d, m in modality.items()}
        self.source_domains, self.target_domains = tuple(source), tuple(target)
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.sided = bool(cfg.get("sided", False))
        if window is not None:
            self.ct_window = (float(window[0]), float(window[1]))
        self.label_remap = {int(k): int(v) for k, v in (cfg.get("label_remap") or {}).items()}
        self.train_defaults = dict(cfg.get("train") or {})
        self.description = f"your own data: {cfg.get('name', root.name)} ({root})"
        self.cache_tag = hashlib.sha1(json.dumps([str(root), cfg], sort_keys=True).encode()).hexdigest()[:10]

    @staticmethod
    def _classes(cfg: dict, meta: dict, where: Path) -> dict[int, str]:
        if cfg.get("classes"):
            classes = {int(k): str(v) for k, v in cfg["classes"].items()}
        else:
            labels = meta.get("labels") or {}
            try:
                if all(str(k).lstrip("-").isdigit() for k in labels):        # nnU-Net v1: {"0": "background"}
                    classes = {int(k): str(v) for k, v in labels.items()}
                else:                                                        # v2: {"background": 0}
                    classes = {int(v): str(k) for k, v in labels.items()}
            except (TypeError, ValueError):
                raise DataError(f"{where.parent / 'dataset.json'}: 'labels' must map names to single integer "
                                f"values (region labels are not supported); or give 'classes' in dgbench.json.") from None
        if sorted(classes) != list(range(len(classes))) or len(classes) < 2:
            raise DataError(f"{where}: classes {classes} must be numbered 0..C-1 with 0 = background (C >= 2); "
                            f"use 'label_remap' for gapped label values.")
        return classes

    def _require(self) -> None:
        if self.config_error is not None:
            raise self.config_error
        if self.root is None:
            raise DataError(f"folder: no dataset configured. Set {ROOT_ENV}=PATH or run "
                            f"`dgbench prepare folder --root PATH` once (docs/datasets.md, 'Your own data').")

    # -- adapter interface -----------------------------------------------------------------------
    def default_root(self) -> Path:
        self._require()
        return self.root

    def ensure_raw(self, root: Path) -> None:
        root = Path(root).expanduser().resolve()
        env = os.environ.get(ROOT_ENV)
        if env and Path(env).expanduser().resolve() != root:
            raise DataError(f"--root {root} differs from {ROOT_ENV}={env}, which later commands would use; "
                            f"unset {ROOT_ENV} or make them agree.")
        super().ensure_raw(root)
        self.configure(root)
        self.config_error = None
        from dgbench.atomic import atomic_write_json
        atomic_write_json(root_pointer(), {"root": str(root)})

    def find_cases(self, root: Path) -> list[Case]:
        self._require()
        rows = self.read_manifest_rows(root)
        self.manifest_roles = {r["case"]: r.get("split", "") for r in rows}
        cases = super().find_cases(root)
        for c in cases:
            if not c.label.exists():
                raise DataError(f"{c.label}: label file missing for case {c.case_id} (listed in domains.csv).")
        return cases

    @property
    def realised_split_path(self) -> Path:
        return cache_dir() / "splits" / f"folder-{self.cache_tag}.json"

    def split_rule(self) -> dict | None:
        self._require()
        rule = {"dataset": "folder", "rule": FOLDER_RULE, "seed": SEED, "fewshot": list(FEWSHOT),
                "target_val_fraction": float(self.config.get("target_val_fraction", 0.0)),
                "source": list(self.source_domains), "target": list(self.target_domains)}
        return {**rule, "sha1": content_sha1(rule), "path": str(self.root / "dgbench.json")}

    def derive_split(self, cases: list[Case], rule: dict) -> dict:
        manifest = self.root / "domains.csv"
        roles = {c.case_id: self.manifest_roles.get(c.case_id, "") for c in cases}
        source = nsorted(c.case_id for c in cases if c.domain in self.source_domains)
        target = {d: nsorted(c.case_id for c in cases if c.domain == d) for d in self.target_domains}
        dom = {c.case_id: c.domain for c in cases}
        if any(roles.values()):
            bad = [c for c, r in roles.items() if r not in ROLES
                   or (r in ("train", "val")) != (dom[c] in self.source_domains)]
            if bad:
                raise DataError(f"{manifest}: case {bad[0]} has split {roles[bad[0]]!r} with domain {dom[bad[0]]!r}; "
                                f"split must be train/val for source domains and target_val/test for target "
                                f"domains, on every row.")
            train = [c for c in source if roles[c] == "train"]
            shots = shuffled(train, rule["seed"])
            return payload(train, [c for c in source if roles[c] == "val"],
                           {d: [c for c in ids if roles[c] == "test"] for d, ids in target.items()},
                           {d: [c for c in ids if roles[c] == "target_val"] for d, ids in target.items()},
                           {str(n): shots[:n] for n in rule["fewshot"] if n <= len(shots)})
        if len(source) < 2:
            raise DataError(f"{manifest}: {len(source)} case(s) in the source domains {list(self.source_domains)}; "
                            f"at least 2 are needed (training and source-val).")
        tr, val, shots = hold_out(source, rule["seed"], rule["fewshot"])
        tv, test = {}, {}
        for d, ids in target.items():
            order = shuffled(ids, rule["seed"])
            k = math.floor(rule["target_val_fraction"] * len(order))
            tv[d], test[d] = order[:k], order[k:]
        return payload(tr, val, test, {d: v for d, v in tv.items() if v}, shots)
