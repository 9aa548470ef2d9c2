"""What a dataset adapter answers, and the committed split files.

An adapter knows a dataset *as distributed*: which cases exist, each case's domain, where its
image and label files are, the label names, each domain's modality (for intensity
normalisation), the target spacing and the training defaults. Splits come from `splits/<name>.json`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dgbench.data.io import DataError, read_json

REPO_SPLITS = Path(__file__).resolve().parents[2] / "splits"


def splits_dir() -> Path:
    return Path(os.environ.get("DGBENCH_SPLITS", REPO_SPLITS))


def cache_dir() -> Path:
    """The data and weights cache: $DGBENCH_CACHE, or ~/.cache/dgbench when unset or empty."""
    return Path(os.environ.get("DGBENCH_CACHE") or Path.home() / ".cache" / "dgbench")


@dataclass(frozen=True)
class Case:
    case_id: str
    domain: str
    image: Path
    label: Path
    channel: int | None = None   # channel of a 4-D image (MSD BraTS); None for 3-D files


@dataclass
class Split:
    """Fixed split: source train / source val / target test per domain (+ few-shot subsets).

    `val` is the source-domain validation split (model selection never sees target labels);
    `target_val` is the reference protocol's target-domain val split, kept for the labelled
    "oracle" table only. A `provisional` split stands in for one that is derived from the files
    (`splits/<name>.rule.json`) and has not been realised by `dgbench prepare` yet: it names no cases."""
    dataset: str
    train: list[str]
    val: list[str]
    test: dict[str, list[str]]
    fewshot: dict[str, list[str]] = field(default_factory=dict)
    rule: str = ""
    sha1: str = ""
    path: Path | None = None
    target_val: dict[str, list[str]] = field(default_factory=dict)
    provisional: bool = False

    def train_cases(self, fewshot: int | None = None) -> list[str]:
        if fewshot is None:
            return list(self.train)
        key = str(fewshot)
        if key not in self.fewshot:
            raise DataError(f"{self.path}: no fixed few-shot subset of size {fewshot}; "
                            f"available: {sorted(self.fewshot, key=int)}")
        return list(self.fewshot[key])

    def all_cases(self) -> list[str]:
        return (list(self.train) + list(self.val) + [c for ids in self.target_val.values() for c in ids]
                + [c for ids in self.test.values() for c in ids])


def content_sha1(payload: dict) -> str:
    body = {k: v for k, v in payload.items() if k != "sha1"}
    return hashlib.sha1(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_split(path: Path) -> Split:
    path = Path(path)
    payload = read_json(path, "split file not found. Splits are committed in splits/; restore it with git.")
    sha = content_sha1(payload)
    if payload.get("sha1") and payload["sha1"] != sha:
        raise DataError(f"{path}: split content does not match its recorded checksum "
                        f"({payload['sha1']} recorded, {sha} now). Splits are fixed: restore the file "
                        f"with git rather than editing it.")
    split = Split(dataset=payload["dataset"], train=payload["train"], val=payload["val"],
                  test=payload["test"], fewshot=payload.get("fewshot", {}), rule=payload.get("rule", ""),
                  sha1=sha, path=path, target_val=payload.get("target_val", {}),
                  provisional=bool(payload.get("provisional", False)))
    source = set(split.train) | set(split.val)
    target = {c for ids in split.test.values() for c in ids}
    target_val = {c for ids in split.target_val.values() for c in ids}
    if target_val & target:
        raise DataError(f"{path}: cases {sorted(target_val & target)[:5]} are in both target_val and test.")
    target |= target_val
    if source & target:
        raise DataError(f"{path}: cases {sorted(source & target)[:5]} are in both source and target splits.")
    if set(split.train) & set(split.val):
        raise DataError(f"{path}: cases {sorted(set(split.train) & set(split.val))[:5]} are in both train and val.")
    for k, ids in split.fewshot.items():
        if not set(ids) <= set(split.train):
            raise DataError(f"{path}: few-shot subset {k} has cases outside the training split.")
    return split


SPLIT_KEYS = ("train", "val", "target_val", "test", "fewshot")


def split_difference(old: dict, new: dict) -> str:
    """'' when two split payloads name the same cases in the same roles, else a short description."""
    parts = []
    for key in SPLIT_KEYS:
        ga, gb = (g if isinstance(g, dict) else {"": g or []} for g in (old.get(key), new.get(key)))
        for sub in sorted(set(ga) | set(gb)):
            x, y = list(ga.get(sub, [])), list(gb.get(sub, []))
            if x != y:
                gone, added = [c for c in x if c not in y], [c for c in y if c not in x]
                name = f"{key}[{sub}]" if sub else key
                parts.append(f"{name}: " + (f"-{len(gone)} {gone[:3]} +{len(added)} {added[:3]}"
                                            if gone or added else "same cases, other order"))
    return "; ".join(parts)


def write_split(path: Path, payload: dict) -> None:
    from dgbench.atomic import atomic_write_json
    payload = dict(payload)
    payload["sha1"] = content_sha1(payload)
    atomic_write_json(path, payload)


class DatasetAdapter:
    """Base class. Subclasses set the class attributes and implement `find_cases`."""
    name: str = ""
    description: str = ""
    classes: dict[int, str] = {}             # label value -> name; 0 is background
    domains: dict[str, str] = {}             # domain name -> modality: "ct" or "mr"
    source_domains: tuple[str, ...] = ()
    target_domains: tuple[str, ...] = ()
    spacing: tuple[float, float, float] | None = None   # target spacing (mm); None keeps native
    ct_window: tuple[float, float] = (-1024.0, 1024.0)   # HU range mapped to [0, 1] for CT domains
    sided: bool = False                      # left/right labels: no flips or 90° rotations
    label_remap: dict[int, int] = {}
    train_defaults: dict = {}                # TrainConfig overrides for this dataset
    download: str = ""                       # where users get the data
    licence: str = ""
    generated: bool = False                  # made by dgbench itself (no download, prepared on demand)

    @property
    def n_classes(self) -> int:
        return max(self.classes) + 1

    @property
    def split_path(self) -> Path:
        return splits_dir() / f"{self.name}.json"

    def split(self) -> Split:
        """The committed split; for a split derived from the files, the one `prepare` realised
        (a provisional, empty stand-in until then, so that runs can be planned without data)."""
        rule = None if self.split_path.exists() else self.split_rule()
        if rule is None:
            return load_split(self.split_path)
        path = self.realised_split_path
        if not path.exists():
            payload = {"dataset": self.name, "provisional": True, "rule": rule.get("rule", ""),
                       "rule_sha1": rule["sha1"], "train": [], "val": [],
                       "test": {d: [] for d in self.target_domains},
                       "fewshot": {str(n): [] for n in rule.get("fewshot", [])}}
            return Split(self.name, [], [], payload["test"], payload["fewshot"], rule=payload["rule"],
                         sha1=content_sha1(payload), path=path, provisional=True)
        recorded = json.loads(path.read_text()).get("rule_sha1")
        if recorded != rule["sha1"]:
            raise DataError(f"{path}: realised with another version of {rule['path']} (rule checksum "
                            f"{recorded}, now {rule['sha1']}). Run `dgbench prepare {self.name} --root PATH` "
                            f"again to re-derive the split.")
        return load_split(path)

    # -- splits derived from the files (case ids only known once the data is read) ----------------
    @property
    def realised_split_path(self) -> Path:
        """Where `prepare` records a split derived from the files: next to the cache."""
        return cache_dir() / "splits" / f"{self.name}.json"

    def split_rule(self) -> dict | None:
        """The committed derivation rule (`splits/<name>.rule.json`, checksum verified) of a dataset
        whose case ids are only known from the files, or None when the split file lists the cases."""
        path = splits_dir() / f"{self.name}.rule.json"
        if not path.exists():
            return None
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: split rule file is not valid JSON ({e}).") from e
        sha = content_sha1(payload)
        if payload.get("sha1") and payload["sha1"] != sha:
            raise DataError(f"{path}: rule content does not match its recorded checksum; restore it with git.")
        return {**payload, "sha1": sha, "path": str(path)}

    def derive_split(self, cases: list[Case], rule: dict) -> dict:
        """train / val / target_val / test / fewshot that the rule gives for the cases found."""
        raise NotImplementedError(f"{self.name}: {rule.get('path')} exists but the adapter has no derive_split")

    def split_for(self, cases: list[Case]) -> Split:
        """The split `prepare` caches for the cases found. A committed list is returned as is. A split
        derived from the files is realised the first time (written with its checksum) and must come
        out the same ever after: a change is refused, never applied silently."""
        rule = self.split_rule()
        if rule is None:
            return self.split()
        payload = {"dataset": self.name, "rule": rule.get("rule", ""), "rule_sha1": rule["sha1"],
                   **self.derive_split(cases, rule)}
        committed = self.split_path.exists()
        frozen = self.split_path if committed else self.realised_split_path
        if frozen.exists():
            old = json.loads(frozen.read_text())
            diff = split_difference(old, payload)
            if diff:
                how = ("Check that the download is complete; if the release really differs, the committed "
                       "file must be replaced (a reviewed change)." if committed else
                       f"If the data changed on purpose (a newer release, a completed download), delete {frozen} "
                       f"and prepare again: runs keep the split checksum they were made with, so old and new "
                       f"results are never mixed.")
                raise DataError(f"{frozen}: the files found give a different {self.name} split than the one "
                                f"{'committed' if committed else 'realised when the dataset was first prepared'}"
                                f" ({diff}). {how}")
            if committed or old.get("rule_sha1") == rule["sha1"]:
                return load_split(frozen)
        write_split(self.realised_split_path, payload)
        return load_split(self.realised_split_path)

    def default_root(self) -> Path:
        env = os.environ.get(f"DGBENCH_{self.name.upper().replace('-', '_')}_ROOT")
        return Path(env) if env else cache_dir() / "raw" / self.name

    def find_cases(self, root: Path) -> list[Case]:
        raise NotImplementedError

    def ensure_raw(self, root: Path) -> None:
        """Datasets that can be made locally (synth) create their files here; real ones check only."""
        if not Path(root).exists():
            raise DataError(f"{root}: dataset folder for {self.name!r} not found. Download it from "
                            f"{self.download or 'its official source'} and pass --root PATH "
                            f"(or set DGBENCH_{self.name.upper().replace('-', '_')}_ROOT).")

    def remap_labels(self, labels):
        if not self.label_remap:
            return labels
        out = labels.copy()
        for src, dst in self.label_remap.items():
            out[labels == src] = dst
        return out
