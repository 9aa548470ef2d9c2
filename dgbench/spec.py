"""RunSpec: what one run is, and its stable identity.

A run's id is a hash of its *resolved* spec (dataset, method, setting, seed, the method's
hyperparameters after defaults, and the training recipe after dataset defaults), so two
commands that mean the same run share one run folder, and changing anything that could change
the result gives a new folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from dgbench.errors import UserError

SETTING_RE = re.compile(r"^(full|fewshot-(\d+))$")
# The reference recipe's per-transform augmentation probability (the MaskGen reference recipe, Diaz et al. 2026). Methods with
# their own pipelines (HeavyAug, BigAug) scale their published probabilities by aug_prob / this.
REFERENCE_AUG_PROB = 0.33
AMP_MODES = ("auto", "bf16", "fp32")
COMPILE_MODES = ("auto", "on", "off")
AUG_ON_MODES = ("auto", "cpu", "device")
# Options added after run ids were first written: left out of to_dict (so of the run id) at
# their defaults, so every run specified before they existed keeps its id and folder.
LATE_OPTIONS = {"compile": "auto", "aug_on": "auto"}


@dataclass(frozen=True)
class TrainConfig:
    """The shared recipe (Diaz et al. 2026). Datasets supply defaults; runs may override."""
    steps: int = 250_000
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 1e-5
    patch_size: tuple[int, int, int] = (128, 128, 128)
    backbone: str = "unet"
    backbone_kwargs: dict = field(default_factory=lambda: {"width": 20, "levels": 5})
    val_every: int = 1000
    ckpt_every: int = 1000
    fg_oversample: float = 0.33      # fraction of patches centred on a foreground voxel
    aug_prob: float = REFERENCE_AUG_PROB  # per-transform firing probability of the standard augmentation
    sw_overlap: float = 0.5          # sliding-window overlap at evaluation
    sw_batch_size: int = 4
    num_workers: int = 0             # data-loader worker processes
    amp: str = "auto"                # "auto" = bf16 on CUDA, fp32 on CPU; or "bf16" / "fp32"
    compile: str = "auto"            # torch.compile the networks: "auto" = on for CUDA; or "on" / "off"
    aug_on: str = "auto"             # where the standard augmentation runs: "auto" = "device" on CUDA; or "cpu"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        for k, default in LATE_OPTIONS.items():
            if d[k] == default:
                del d[k]
        return d

    def check(self) -> None:
        """ValueError naming every option that cannot train (a run would otherwise write a "done"
        folder for an untrained net, or die deep in the loop)."""
        bad = [f"{k} must be a whole number >= 1, got {getattr(self, k)!r}"
               for k in ("steps", "batch_size", "val_every", "ckpt_every", "sw_batch_size")
               if not (isinstance(getattr(self, k), int) and getattr(self, k) >= 1)]
        if not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            bad.append(f"num_workers must be a whole number >= 0, got {self.num_workers!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            bad.append(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for k in ("aug_prob", "fg_oversample"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                bad.append(f"{k} is a probability in [0, 1], got {getattr(self, k)!r}")
        if not 0.0 <= self.sw_overlap < 1.0:
            bad.append(f"sw_overlap must be in [0, 1), got {self.sw_overlap!r}")
        if self.amp not in AMP_MODES:
            bad.append(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.compile not in COMPILE_MODES:
            bad.append(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.aug_on not in AUG_ON_MODES:
            bad.append(f"aug_on must be one of {', '.join(AUG_ON_MODES)}, got {self.aug_on!r}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            bad.append(f"patch_size must be three sides >= 1, got {list(self.patch_size)}")
        else:
            bad += self._backbone_problems()
        if bad:
            raise UserError("training option(s): " + "; ".join(bad))

    def _backbone_problems(self) -> list[str]:
        """What the backbone says about these kwargs and this patch (kept by registry.declared:
        a fresh process does not import the backbones, and torch, to check a sweep)."""
        from dgbench.registry import declared
        key = _canonical([self.backbone, self.backbone_kwargs, list(self.patch_size)])
        return declared(f"backbone-check:{key}", self._check_backbone)

    def _check_backbone(self) -> list[str]:
        import inspect
        from dgbench.registry import BACKBONES
        try:
            cls = BACKBONES.get(self.backbone)
        except KeyError as e:
            return [str(e.args[0])]
        if not isinstance(self.backbone_kwargs, dict):
            return [f"backbone_kwargs must be a mapping, got {self.backbone_kwargs!r}"]
        try:
            inspect.signature(cls).bind(1, 1, **self.backbone_kwargs)
        except TypeError as e:
            return [f"backbone_kwargs {self.backbone_kwargs}: {e} for backbone {self.backbone!r}"]
        rule = getattr(cls, "patch_rule", None)
        if rule is None:
            return []
        multiple, smallest = rule(**self.backbone_kwargs)
        if any(s % multiple or s < smallest for s in self.patch_size):
            return [f"patch_size {list(self.patch_size)}: backbone {self.backbone!r} with {self.backbone_kwargs} "
                    f"needs sides that are multiples of {multiple} and at least {smallest} (e.g. "
                    f"{[max(smallest, -(-s // multiple) * multiple) for s in self.patch_size]}), or fewer levels"]
        return []

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for f in dataclasses.fields(cls):   # "1e-3" from YAML or the command line is a number here
            if f.name in d and isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                try:
                    d[f.name] = type(f.default)(float(d[f.name]) if type(f.default) is float else d[f.name])
                except (TypeError, ValueError):
                    raise UserError(f"training option {f.name} must be a number, got {d[f.name]!r}") from None
        if isinstance(d.get("compile"), bool):   # YAML reads on/off as booleans
            d["compile"] = "on" if d["compile"] else "off"
        if "patch_size" in d:
            ps = d["patch_size"]
            d["patch_size"] = tuple(int(v) for v in (ps if isinstance(ps, (list, tuple)) else [ps] * 3))
        return cls(**d)


def parse_value(text: str) -> Any:
    """A command-line value: int, then float (YAML would keep "1e-3" a string), then YAML."""
    import yaml
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    method: str
    seed: int = 0
    setting: str = "full"
    hparams: dict = field(default_factory=dict)   # method hyperparameters, defaults filled in
    train: TrainConfig = field(default_factory=TrainConfig)
    split_sha: str = ""                           # checksum of the split file used
    method_revision: int = 0                      # the method class's `revision` (Method.revision)
    # resolved against a split that `dgbench prepare` has not derived from the files yet: split_sha,
    # so the run id, is a stand-in until then (plans show no id; run_specs refuses to run it)
    provisional: bool = field(default=False, compare=False)

    def __post_init__(self):
        if not SETTING_RE.match(self.setting):
            raise UserError(f"setting must be 'full' or 'fewshot-N', got {self.setting!r}")

    @property
    def fewshot(self) -> int | None:
        m = SETTING_RE.match(self.setting)
        return int(m.group(2)) if m and m.group(2) else None

    def to_dict(self) -> dict:
        d = {"dataset": self.dataset, "method": self.method, "seed": self.seed,
             "setting": self.setting, "hparams": dict(self.hparams),
             "train": self.train.to_dict(), "split_sha": self.split_sha}
        if self.method_revision:   # absent at 0, so the ids of never-revised methods stay put
            d["method_revision"] = self.method_revision
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(dataset=d["dataset"], method=d["method"], seed=int(d["seed"]),
                   setting=d.get("setting", "full"), hparams=dict(d.get("hparams", {})),
                   train=TrainConfig.from_dict(d.get("train", {})), split_sha=d.get("split_sha", ""),
                   method_revision=int(d.get("method_revision", 0)))

    @property
    def shown_id(self) -> str:
        """The run id, or for a provisional spec the id's known fields and "<after prepare>"."""
        if self.provisional:
            return f"{self.dataset}_{self.method}_{self.setting}_s{self.seed}_<after prepare>"
        return self.run_id

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(_canonical(self.to_dict()).encode()).hexdigest()[:10]
        return f"{self.dataset}_{self.method}_{self.setting}_s{self.seed}_{digest}"


def merge_hparams(method: str, defaults: dict, hparams: dict | None, where: str = "hyperparameters") -> dict:
    """``defaults`` with ``hparams`` over them; UserError naming the method's hyperparameters for
    any key not in ``defaults``. ``where`` says where the keys were given (``--hparam``, a sweep
    file's ``hparams``). The one rule for a method's hyperparameters: `check_hparams` applies it
    to the declared defaults, `Method.resolve_hparams` to the class's own."""
    unknown = sorted(set(hparams or {}) - set(defaults))
    if unknown:
        raise UserError(f"{where}: unknown hyperparameter(s) {unknown} for method {method!r}; its "
                        f"hyperparameters: {', '.join(sorted(defaults)) or 'none'}")
    return {**defaults, **(hparams or {})}


def check_hparams(method: str, hparams: dict | None, where: str = "hyperparameters") -> dict:
    """The registered method's hyperparameters: its declared defaults (the class's ``defaults``,
    registry.method_declaration: no plug-in import) with ``hparams`` over them (merge_hparams)."""
    from dgbench.registry import method_declaration
    return merge_hparams(method, method_declaration(method)["defaults"], hparams, where)


def resolve(dataset: str, method: str, seed: int = 0, setting: str = "full",
            hparams: dict | None = None, train: dict | None = None) -> RunSpec:
    """A complete RunSpec: method defaults, the dataset's recipe defaults and the split checksum
    filled in. Reads only committed files (registry, splits), never the data, and imports no
    method or model plug-in when their declarations are known (registry.declared)."""
    from dgbench.registry import DATASETS, method_declaration
    adapter = DATASETS.get(dataset)()
    revision = method_declaration(method)["revision"]
    hp = check_hparams(method, hparams)
    cfg = TrainConfig.from_dict({**adapter.train_defaults, **(train or {})})
    cfg.check()
    split = adapter.split()
    spec = RunSpec(dataset=dataset, method=method, seed=int(seed), setting=setting, hparams=hp,
                   train=cfg, split_sha=split.sha1, method_revision=revision, provisional=split.provisional)
    if spec.fewshot is not None:
        split.train_cases(spec.fewshot)  # raises if the split has no such subset
    return spec
