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

from dgbench.data.io import DataError

REPO_SPLITS = Path(__file__).resolve().parents[2] / "splits"


def splits_dir() -> Path:
    return Path(os.environ.get("DGBENCH_SPLITS", REPO_SPLITS))


def cache_dir() -> Path:
    return Path(os.environ.get("DGBENCH_CACHE", Path.home() / ".cache" / "dgbench"))


@dataclass(frozen=True)
class Case:
    case_id: str
    domain: str
    image: Path
    label: Path
    channel: int | None = None   # channel of a 4-D image (MSD BraTS); None for 3-D files


@dataclass
class Split:
    """Fixed split: source train / source val / target test per domain (+ few-shot subsets)."""
    dataset: str
    train: list[str]
    val: list[str]
    test: dict[str, list[str]]
    fewshot: dict[str, list[str]] = field(default_factory=dict)
    rule: str = ""
    sha1: str = ""
    path: Path | None = None

    def train_cases(self, fewshot: int | None = None) -> list[str]:
        if fewshot is None:
            return list(self.train)
        key = str(fewshot)
        if key not in self.fewshot:
            raise DataError(f"{self.path}: no fixed few-shot subset of size {fewshot}; "
                            f"available: {sorted(self.fewshot, key=int)}")
        return list(self.fewshot[key])

    def all_cases(self) -> list[str]:
        return list(self.train) + list(self.val) + [c for ids in self.test.values() for c in ids]


def content_sha1(payload: dict) -> str:
    body = {k: v for k, v in payload.items() if k != "sha1"}
    return hashlib.sha1(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_split(path: Path) -> Split:
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found. Splits are committed in splits/; "
                        f"restore it with git.") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: split file is not valid JSON ({e}).") from e
    sha = content_sha1(payload)
    if payload.get("sha1") and payload["sha1"] != sha:
        raise DataError(f"{path}: split content does not match its recorded checksum "
                        f"({payload['sha1']} recorded, {sha} now). Splits are fixed: restore the file "
                        f"with git rather than editing it.")
    split = Split(dataset=payload["dataset"], train=payload["train"], val=payload["val"],
                  test=payload["test"], fewshot=payload.get("fewshot", {}), rule=payload.get("rule", ""),
                  sha1=sha, path=path)
    source = set(split.train) | set(split.val)
    target = {c for ids in split.test.values() for c in ids}
    if source & target:
        raise DataError(f"{path}: cases {sorted(source & target)[:5]} are in both source and target splits.")
    if set(split.train) & set(split.val):
        raise DataError(f"{path}: cases {sorted(set(split.train) & set(split.val))[:5]} are in both train and val.")
    for k, ids in split.fewshot.items():
        if not set(ids) <= set(split.train):
            raise DataError(f"{path}: few-shot subset {k} has cases outside the training split.")
    return split


def write_split(path: Path, payload: dict) -> None:
    from dgbench.rundir import atomic_write_json
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
        return load_split(self.split_path)

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
