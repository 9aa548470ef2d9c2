"""Which runs a sweep means: the grid datasets x methods x settings x seeds, from flags or a YAML
sweep file (with optional sub-grids), resolved into RunSpecs. Needs no data on disk."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

from dgbench.errors import UserError
from dgbench.spec import RunSpec, check_hparams

SWEEP_KEYS = {"datasets", "methods", "settings", "seeds", "hparams", "train", "results",
              "executor", "grids", "local", "slurm", "retry_failed"}
GRID_KEYS = {"datasets", "methods", "settings", "seeds", "hparams", "train"}


def as_list(value: Any) -> list[str]:
    """'a,b' / ['a', 'b'] / 'a' -> ['a', 'b'] / ['a', 'b'] / ['a']."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def as_seeds(value: Any) -> list[int]:
    """'0,1,2', '0-2' or [0, '1-2'] -> [0, 1, 2]; a bare int is one seed."""
    if isinstance(value, int):
        return [value]
    seeds: list[int] = []
    for item in as_list(value):
        lo, sep, hi = item.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep and lo else [int(item)])
        except ValueError:
            raise UserError(f"seeds: {item!r} is not a seed; write 0,1,2 or 0-2") from None
    return seeds


def expand(datasets: Iterable[str], methods: Iterable[str], settings: Iterable[str] = ("full",),
           seeds: Iterable[int] = (0,), hparams: dict | None = None,
           train: dict | None = None) -> list[RunSpec]:
    """The grid datasets x methods x settings x seeds, resolved, without duplicates.

    ``hparams`` maps a method name to its hyperparameter overrides; ``train`` overrides the
    training recipe of every run. Needs no data on disk."""
    from dgbench.spec import resolve
    hparams = hparams or {}
    unknown = set(hparams) - set(methods)
    if unknown:
        raise UserError(f"hparams given for method(s) not in the sweep: {sorted(unknown)}")
    specs: dict[str, RunSpec] = {}
    for d, m, st, sd in itertools.product(list(datasets), list(methods), list(settings), list(seeds)):
        spec = resolve(d, m, seed=int(sd), setting=st, hparams=dict(hparams.get(m) or {}),
                       train=dict(train or {}))
        specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def load_sweep(path: str | Path) -> dict:
    """Read a sweep file (YAML). Keys: datasets, methods, settings, seeds, hparams (per method),
    train, results, executor, local / slurm (executor options), retry_failed, and optionally
    grids: a list of sub-grids, each taking the top-level keys as defaults."""
    import yaml
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise UserError(f"sweep file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"sweep file {path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: a sweep file is a mapping, got {type(cfg).__name__}")
    unknown = set(cfg) - SWEEP_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(SWEEP_KEYS)}")
    for grid in cfg.get("grids") or []:
        bad = set(grid) - GRID_KEYS
        if bad:
            raise UserError(f"{path}: unknown grid key(s) {sorted(bad)}; known: {sorted(GRID_KEYS)}")
    return cfg


def sweep_datasets(cfg: dict) -> list[str]:
    """Every dataset a sweep config names (top level and grids), in order."""
    grids = cfg.get("grids") or [{}]
    return list(dict.fromkeys(d for grid in grids for d in as_list(grid.get("datasets", cfg.get("datasets")))))


def sweep_methods(cfg: dict) -> list[str]:
    """Every method a sweep config names (top level and grids), in order."""
    grids = cfg.get("grids") or [{}]
    return list(dict.fromkeys(m for grid in grids for m in as_list(grid.get("methods", cfg.get("methods")))))


def sweep_specs(cfg: dict, skip: Iterable[str] = ()) -> list[RunSpec]:
    """The runs a sweep config means (see load_sweep), in order, without duplicates. Datasets in
    ``skip`` are left out (the preflight has already reported why they cannot be specified)."""
    skip = set(skip)
    grids = cfg.get("grids") or [{}]
    grid_methods = [as_list(grid.get("methods", cfg.get("methods"))) for grid in grids]
    swept = set().union(*grid_methods)
    stray = sorted(set(cfg.get("hparams") or {}) - swept)
    for grid, methods in zip(grids, grid_methods):
        stray += sorted(set(grid.get("hparams") or {}) - set(methods))
    if stray:
        raise UserError(f"hyperparameters given for method(s) {sorted(set(stray))} that the sweep (or the grid "
                        f"they are given in) does not run "
                        f"(methods: {', '.join(sorted(swept)) or 'none'}); check the spelling of METHOD in "
                        f"--hparam METHOD.NAME=VALUE or the sweep file's hparams")
    for method, hp in (cfg.get("hparams") or {}).items():
        check_hparams(method, hp, "the sweep's hparams")
    for grid in grids:
        for method, hp in (grid.get("hparams") or {}).items():
            check_hparams(method, hp, "a grid's hparams")
    specs: dict[str, RunSpec] = {}
    for grid in grids:
        g = {k: cfg.get(k) for k in GRID_KEYS}
        g.update({k: v for k, v in grid.items() if k not in ("train", "hparams")})
        g["train"] = {**(cfg.get("train") or {}), **(grid.get("train") or {})}
        hp = {m: dict(v or {}) for m, v in (cfg.get("hparams") or {}).items()}
        for m, v in (grid.get("hparams") or {}).items():
            hp[m] = {**hp.get(m, {}), **(v or {})}
        methods = as_list(g["methods"])
        if not as_list(g["datasets"]) or not methods:
            raise UserError("a sweep needs datasets and methods (--datasets, --methods or the sweep file's)")
        datasets = [d for d in as_list(g["datasets"]) if d not in skip]
        for spec in expand(datasets, methods, as_list(g["settings"]) or ["full"],
                           as_seeds(g["seeds"] if g["seeds"] is not None else 0),
                           {m: v for m, v in hp.items() if m in methods}, g["train"]):
            specs.setdefault(spec.run_id, spec)
    return list(specs.values())
