"""Run folders -> a Collection (runs + metric rows), per-run scores, and run accounting."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from dgbench.report.common import DAGGER

# ------------------------------------------------------------------------------------------
# collection
# ------------------------------------------------------------------------------------------
@dataclass
class Collection:
    """Everything read from a results folder.

    ``runs``: one row per run folder (run_id, dataset, method, setting, seed, config, state,
    error). ``metrics``: the concatenated metrics.csv of the *done* runs only."""
    runs: pd.DataFrame
    metrics: pd.DataFrame
    root: Path = field(default_factory=Path)
    declared: set | None = None     # (dataset, setting, method, seed) a sweep file declares; None: observed grid
    declared_by: str = ""           # that sweep file

    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["state"] == "done"]

    def rows(self, selection: str, split: str | None = None) -> pd.DataFrame:
        """Metric rows of one selection rule (and split), memoised: tables ask many times."""
        key = (selection, split)
        if key not in self._cache:
            m = self.metrics
            mask = m["selection"] == selection
            if split is not None:
                mask &= m["split"] == split
            self._cache[key] = m[mask]
        return self._cache[key]

    def runs_with(self, selection: str) -> set:
        key = ("runs_with", selection)
        if key not in self._cache:
            self._cache[key] = set(self.rows(selection)["run_id"].unique())
        return self._cache[key]


_RUN_COLUMNS = ["run_id", "dataset", "method", "setting", "seed", "config", "state", "error", "path",
                "converged", "convergence", "convergence_source"]


def _config_key(spec: dict) -> str:
    """Hyperparameters + recipe without the seed: runs that differ only by seed share it."""
    keep = {k: spec.get(k) for k in ("hparams", "train", "split_sha")}
    return json.dumps(keep, sort_keys=True, default=str)


def _read_run(path: Path, rec=None) -> dict:
    """One run folder as a row of Collection.runs. Spec and state come from dgbench.rundir (``rec``:
    its RunRecord, else scanned here): done / failed / invalid, or "incomplete (running | stale |
    pending)". Only a trusted spec labels a run; a folder without one has no labels (not counted).
    An invalid run keeps the labels of its folder's name, so that tables list it in its cell."""
    from dgbench.rundir import scan
    path = Path(path)
    rec = rec or scan(path.parent.parent, [path.name])[0]
    spec = rec.spec
    row = {"run_id": rec.run_id, "dataset": spec.get("dataset"), "method": spec.get("method"),
           "setting": spec.get("setting", "full") if spec.get("dataset") else None, "seed": spec.get("seed"),
           "config": _config_key(spec) if rec.state != "invalid" and spec else "",
           "state": rec.state, "error": rec.error, "path": str(path),
           "converged": None, "convergence": "", "convergence_source": None}
    if rec.state in ("running", "stale", "pending"):
        row["state"] = f"incomplete ({rec.state})"
    elif rec.state == "done":
        row.update(_run_convergence(path, (spec.get("train") or {}).get("steps")))
    if row["seed"] is not None:
        row["seed"] = int(row["seed"])
    return row


def _run_convergence(path: Path, steps) -> dict:
    """converged (True / False / None = unknown), convergence (the reasons), convergence_source.

    The verdict recorded in done.json at the end of training when it was made by the current
    rules (reading a 250k-step train_loss.csv takes ~0.5 s); else one computed from the files
    (older run folders, or a verdict from rules that have changed since: convergence.RULES)."""
    from dgbench import convergence
    try:
        with open(path / "done.json") as f:
            v = json.load(f).get("convergence")
        if not (isinstance(v, dict) and "converged" in v and "source" in v and v.get("rules") == convergence.RULES):
            v = convergence.of_run(path, int(steps) if steps else None)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        v = {"converged": None, "source": "none",
             "reasons": [f"convergence unknown: unreadable train_loss.csv / val_history.csv ({e})"]}
    return {"converged": v["converged"], "convergence": " and ".join(v["reasons"]),
            "convergence_source": v["source"]}


def not_converged(runs: pd.DataFrame) -> pd.Series:
    """Mask of the runs that did not converge or whose convergence is unknown."""
    return ~runs["converged"].eq(True)


def _bad_ids(runs: pd.DataFrame) -> set:
    return set(runs.loc[not_converged(runs), "run_id"])


def _convergence_notes(runs: pd.DataFrame, run_ids: Iterable[str], subject: str = "in this cell") -> list[str]:
    """The † note (runs that did not converge, grouped by method) and, if any, the note on
    verdicts judged from val_history.csv, for the runs ``run_ids``."""
    sub = runs[runs["run_id"].isin(set(run_ids))]
    bad = sub[not_converged(sub)].sort_values(["method", "dataset", "setting", "seed", "run_id"])
    notes = []
    if len(bad):
        groups = []
        for meth, g in bad.groupby("method", sort=True):
            items = [f"{r.dataset}{'' if r.setting == 'full' else f' ({r.setting})'} seed {r.seed}: "
                     f"{r.convergence}" for r in g.itertuples()]
            if len(items) > 4:
                items = items[:3] + [f"{len(items) - 3} more runs"]
            groups.append(f"{meth} — " + ", ".join(items))
        notes.append(f"{DAGGER} at least one run {subject} did not converge (see convergence in done.json): "
                     + "; ".join(groups) + ".")
    fb = sub[sub["convergence_source"] == "val_history"].groupby("method", sort=True).size()
    if len(fb):
        notes.append("Convergence judged from val_history.csv (mean loss per validation interval; these run "
                     "folders have no per-step train_loss.csv): "
                     + ", ".join(f"{m} ({n} run{'s' if n != 1 else ''})" for m, n in fb.items()) + ".")
    return notes


def _read_metrics(path: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path / "metrics.csv", dtype={"case": str, "class_name": str, "domain": str,
                                                     "split": str, "selection": str})
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return df


def _as_bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


def collect(results: Path, run_ids: Iterable[str] | None = None) -> Collection:
    """Read run folders under ``<results>/runs`` (all, or just ``run_ids``)."""
    results = Path(results)
    runs_dir = results / "runs"
    from dgbench.rundir import scan
    rows, frames = [], []
    for rec in scan(results, run_ids):
        p = runs_dir / rec.run_id
        if not p.is_dir():
            rows.append({"run_id": rec.run_id, "dataset": None, "method": None, "setting": None, "seed": None,
                         "config": "", "state": "missing", "error": "no run folder", "path": str(p)})
            continue
        row = _read_run(p, rec)
        if row["state"] == "done" and row["dataset"] is not None:
            df = _read_metrics(p)
            if df is None or df.empty:
                row["state"], row["error"] = "failed", "done.json but no metrics.csv"
            else:
                df["run_id"] = row["run_id"]          # the folder is the identity
                frames.append(df)
        rows.append(row)
    runs = pd.DataFrame(rows, columns=_RUN_COLUMNS)
    runs["seed"] = runs["seed"].astype("Int64")     # stays an integer next to runs without labels
    if frames:
        metrics = pd.concat(frames, ignore_index=True)
        for col in ("dataset", "method", "setting", "seed"):   # the run's spec is authoritative
            metrics[col] = metrics["run_id"].map(runs.set_index("run_id")[col])
        metrics["gt_present"] = _as_bool(metrics["gt_present"]) & metrics["dice"].notna()
        if "domain" not in metrics:
            metrics["domain"] = ""
        metrics["domain"] = metrics["domain"].fillna("")
        if "class_name" not in metrics:
            metrics["class_name"] = metrics["class"].astype(str)
        metrics["class_name"] = metrics["class_name"].fillna(metrics["class"].astype(str))
    else:
        metrics = pd.DataFrame(columns=["run_id", "dataset", "method", "setting", "seed",
                                        "selection", "split", "domain", "case", "class",
                                        "class_name", "dice", "gt_present", "pred_present"])
    return Collection(runs=runs, metrics=metrics, root=results)


# ------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------
def class_scores(metrics: pd.DataFrame, by: Sequence[str] = ("selection", "split")) -> pd.DataFrame:
    """Per run and class: mean Dice over the cases with the class in the GT (NaN if none)."""
    keys = ["run_id", *by, "class"]
    m = metrics.assign(_d=metrics["dice"].where(metrics["gt_present"]))
    g = m.groupby(keys, sort=True, dropna=False)
    out = g.agg(dice=("_d", "mean"), n_present=("gt_present", "sum"),
                class_name=("class_name", "first")).reset_index()
    return out


def run_scores(metrics: pd.DataFrame, by: Sequence[str] = ("selection", "split")) -> pd.DataFrame:
    """Per run (and ``by`` keys): clean mean and reference-compatible mean Dice (0..1)."""
    cs = class_scores(metrics, by)
    keys = ["run_id", *by]
    g = cs.groupby(keys, sort=True, dropna=False)
    out = g.agg(dice=("dice", "mean"),                                 # NaN classes skipped
                dice_refcompat=("dice", lambda s: s.fillna(0.0).mean()),
                n_classes=("class", "size"),
                n_classes_present=("dice", "count")).reset_index()
    n_cases = metrics.groupby(keys, sort=True, dropna=False)["case"].nunique().rename("n_cases")
    return out.merge(n_cases.reset_index(), on=keys, how="left")


# ------------------------------------------------------------------------------------------
# run accounting: which runs a table is built from, which are missing / failed
# ------------------------------------------------------------------------------------------
@dataclass
class Accounting:
    used: list[str]                      # run ids averaged in the table
    expected: int                        # size of the grid
    grid: str                            # "2 datasets × 3 methods × 2 seeds"
    missing: list[str]                   # grid cells without a folder
    problems: list[str]                  # failed / incomplete / no-rows runs, one line each
    config_notes: list[str]


def _grid_accounting(col: Collection, cols: list[tuple[str, str]], methods: list[str],
                     seeds: list[int], used: set[str], extra_problems: list[str],
                     config_notes: list[str], col_label) -> Accounting:
    """The expected grid: every (column, method, seed), or the cells of ``col.declared`` in
    ``cols`` when a sweep file declared the runs."""
    runs = col.runs
    known = runs.dropna(subset=["dataset", "method", "setting", "seed"])
    in_cols = known[[(d, s) in set(cols) for d, s in zip(known["dataset"], known["setting"])]]
    present = in_cols[in_cols["state"] != "missing"]
    have = set(zip(present["dataset"], present["setting"], present["method"], present["seed"]))
    cells = [(d, s, m, sd) for (d, s) in cols for m in methods for sd in seeds]
    if col.declared is not None:
        cells = [c for c in cells if c in col.declared]
    missing = [f"{col_label((d, s))} / {m} / seed {sd}: no run folder" for (d, s, m, sd) in cells if (d, s, m, sd) not in have]
    problems = []
    for r in present.sort_values(["dataset", "setting", "method", "seed", "run_id"]).itertuples():
        if r.state != "done":
            problems.append(f"{r.run_id}: {r.state}" + (f" — {r.error}" if isinstance(r.error, str) and r.error else ""))
    problems += extra_problems
    n_cols = len(cols)
    grid = (f"{n_cols} column{'s' if n_cols != 1 else ''} × {len(methods)} method{'s' if len(methods) != 1 else ''}"
            f" × {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    if col.declared is not None:
        grid = f"declared by {col.declared_by}"
    return Accounting(used=sorted(used), expected=len(cells), grid=grid,
                      missing=missing, problems=problems, config_notes=config_notes)


def _select_runs(col: Collection, selection: str, cols: list[tuple[str, str]]
                 ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Done runs in ``cols`` that have ``selection`` rows; one configuration per cell.

    Returns (runs used, problem lines for done runs without rows, config notes)."""
    runs = col.runs
    done = runs[(runs["state"] == "done")
                & pd.Series([(d, s) in set(cols) for d, s in zip(runs["dataset"], runs["setting"])],
                            index=runs.index, dtype=bool)]
    m = col.rows(selection, "val")
    has = col.runs_with(selection)
    problems = [f"{r}: done, but metrics.csv has no '{selection}' rows"
                for r in sorted(set(done["run_id"]) - has)]
    done = done[done["run_id"].isin(has)]
    notes = []
    keep = []
    for (d, s, meth), g in done.groupby(["dataset", "setting", "method"], sort=True):
        configs = sorted(g["config"].unique())
        if len(configs) == 1:
            keep.append(g)
            continue
        val = m[m["run_id"].isin(g["run_id"])]
        sc = run_scores(val, by=("selection",)).set_index("run_id")["dice"] if len(val) else pd.Series(dtype=float)
        per_cfg = g.assign(v=g["run_id"].map(sc)).groupby("config")["v"].mean()
        if per_cfg.notna().any():
            best = per_cfg.idxmax()
            how = "best mean source-val Dice over seeds"
        else:
            best = configs[0]
            how = "no source-val rows: first configuration in sort order"
        keep.append(g[g["config"] == best])
        notes.append(f"{d} / {s} / {meth}: {len(configs)} hyperparameter configurations, "
                     f"kept the one with the {how}")
    used = pd.concat(keep) if keep else done.iloc[0:0]
    return used, problems, notes
