"""Results -> tables, ranks, statistics and figures, rebuilt from the run folders alone.

Nothing here trains or evaluates; every number comes from ``<results>/runs/*/metrics.csv``
(the per-case, per-class Dice written by the evaluator, see :mod:`dgbench.rundir`).

Dice convention (used everywhere in this module)
------------------------------------------------
The score of one run on one split is the **clean mean**: for each foreground class, the mean
Dice over the cases whose ground truth contains the class (``gt_present``); then the
unweighted mean over the classes. A class absent from *every* case of the split is left out
(it has no defined Dice). The reference code (MONAI ``mean_batch``) would count such a class
as 0; that **reference-compatible mean** is kept next to it in the CSV files
(``*_refcompat`` columns). The two differ only when a class is absent from a whole split.
Dice is shown ×100 with one decimal.

Aggregation: a cell is the mean ± sample s.d. (ddof=1) over seeds of the per-run score.
Ranks are per dataset (1 = best) on the cell means **rounded to the shown precision**
(so two cells that print the same value tie and share the average rank), then averaged over
datasets; a method without a result on a dataset takes the worst rank there and is flagged.

Model selection: ``metrics.csv`` holds rows for each checkpoint rule (``selection``):
"source-val" (primary; best source-validation Dice), "last" (reference protocol: final
weights). Any rule that looks at target labels (name containing "target" or "oracle") is an
oracle and its tables are labelled "ORACLE (uses target labels)". When several
hyperparameter configurations exist for one (dataset, method, setting), the configuration
with the best mean source-val Dice over its seeds is used (DomainBed's training-domain
validation) and the table says so.

Run accounting: the expected grid is every observed (dataset, setting) × every observed
method × every observed seed. A grid cell without a folder is *missing*; a folder with
``failed.json`` is *failed*; a folder without ``done.json`` is *incomplete*. None of these is
averaged; every table lists them under it.

Convergence: every done run gets the :mod:`dgbench.convergence` verdict: the one recorded in
``done.json`` at the end of training, or, for run folders made before that, one computed from
the folder's files (``train_loss.csv``, else the interval means in ``val_history.csv``, and the
tables say so). A cell built from at least one run that
did not converge (or whose convergence is unknown) carries a ``†`` after its value; rank and
paired-test tables put it after the method name. A note under the table names the runs and
why; the CSV files carry the count in ``*.not_converged`` / ``not_converged`` columns.

Predictions for the example-slice figure (contract with the engine): a run folder MAY contain
``predictions/<case>.npz`` with arrays ``image`` (D,H,W float), ``label`` (D,H,W int) and
``pred`` (D,H,W int) for a few target-domain (split "test") cases, predicted with the
checkpoint of the primary selection rule. The figure uses whichever exist and is skipped,
with a logged note, when none do.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("dgbench.report")

PRIMARY = "source-val"
REFERENCE = "last"
DECIMALS = 1                      # Dice x100 shown with one decimal; ranks tie on this
SCALE = 100.0
REF_METHOD = "maskgen"
DASH = "–"
DAGGER = "†"                      # after a value built from a run that did not converge
_RUN_ID_RE = re.compile(r"^(?P<dataset>.+?)_(?P<method>.+)_(?P<setting>full|fewshot-\d+)_s(?P<seed>\d+)_[0-9a-f]{10}$")
_MISSING_NOTE = "Dice convention: per run, each foreground class is averaged over the cases whose ground truth contains it, then classes are averaged (a class absent from every case is excluded); cells are mean ± s.d. over seeds, Dice ×100."


def is_oracle(selection: str) -> bool:
    s = selection.lower()
    return "target" in s or "oracle" in s


def selection_label(selection: str) -> str:
    if is_oracle(selection):
        return f"{selection} — ORACLE (uses target labels)"
    if selection == PRIMARY:
        return f"{selection} (best checkpoint on held-out source validation; primary)"
    if selection == REFERENCE:
        return f"{selection} (final checkpoint, no selection; reference protocol)"
    return selection


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


def _read_run(path: Path) -> dict:
    run_id = path.name
    row = {"run_id": run_id, "dataset": None, "method": None, "setting": None, "seed": None,
           "config": "", "state": "pending", "error": None, "path": str(path),
           "converged": None, "convergence": "", "convergence_source": None}
    spec = None
    try:
        with open(path / "spec.json") as f:
            spec = json.load(f)
        if isinstance(spec, dict) and isinstance(spec.get("spec"), dict):
            spec = spec["spec"]               # dgbench.train.write_spec: {"run_id", "spec", versions}
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    if isinstance(spec, dict) and "dataset" in spec:
        row.update(dataset=spec.get("dataset"), method=spec.get("method"),
                   setting=spec.get("setting", "full"), seed=spec.get("seed"),
                   config=_config_key(spec))
    else:
        m = _RUN_ID_RE.match(run_id)
        if m:
            row.update(dataset=m["dataset"], method=m["method"], setting=m["setting"], seed=m["seed"])
    if (path / "done.json").exists():
        row["state"] = "done"
        steps = (spec.get("train") or {}).get("steps") if isinstance(spec, dict) else None
        row.update(_run_convergence(path, steps))
    elif (path / "failed.json").exists():
        row["state"] = "failed"
        try:
            with open(path / "failed.json") as f:
                row["error"] = json.load(f).get("error")
        except (json.JSONDecodeError, OSError):
            row["error"] = "unreadable failed.json"
    else:
        row["state"] = "incomplete"
    if row["seed"] is not None:
        row["seed"] = int(row["seed"])
    return row


def _run_convergence(path: Path, steps) -> dict:
    """converged (True / False / None = unknown), convergence (the reasons), convergence_source.

    The verdict recorded in done.json at the end of training when there is one (reading a
    250k-step train_loss.csv takes ~0.5 s); else computed from the files (older run folders)."""
    from dgbench import convergence
    try:
        with open(path / "done.json") as f:
            v = json.load(f).get("convergence")
        if not (isinstance(v, dict) and "converged" in v and "source" in v):
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
    if run_ids is None:
        paths = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    else:
        paths = [runs_dir / r for r in run_ids]
    rows, frames = [], []
    for p in paths:
        if not p.is_dir():
            m = _RUN_ID_RE.match(p.name)
            rows.append({"run_id": p.name, "dataset": m["dataset"] if m else None,
                         "method": m["method"] if m else None, "setting": m["setting"] if m else None,
                         "seed": int(m["seed"]) if m else None, "config": "", "state": "missing",
                         "error": "no run folder", "path": str(p)})
            continue
        row = _read_run(p)
        if row["state"] == "done":
            df = _read_metrics(p)
            if df is None or df.empty:
                row["state"], row["error"] = "failed", "done.json but no metrics.csv"
            else:
                df["run_id"] = row["run_id"]          # the folder is the identity
                frames.append(df)
                for k in ("dataset", "method", "setting"):
                    if row[k] is None and k in df:
                        row[k] = str(df[k].iloc[0])
                if row["seed"] is None and "seed" in df:
                    row["seed"] = int(df["seed"].iloc[0])
        rows.append(row)
    runs = pd.DataFrame(rows, columns=_RUN_COLUMNS)
    if frames:
        metrics = pd.concat(frames, ignore_index=True)
        for col in ("dataset", "method", "setting", "seed"):   # spec.json is authoritative
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


def _choose_selection(metrics: pd.DataFrame, run_id: str, prefer: Sequence[str]) -> str | None:
    have = set(metrics.loc[metrics["run_id"] == run_id, "selection"].unique())
    for s in prefer:
        if s in have:
            return s
    return None


# ------------------------------------------------------------------------------------------
# formatting helpers
# ------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return DASH if v is None or not np.isfinite(v) else f"{v * SCALE:.{DECIMALS}f}"


def fmt_cell(mean: float, sd: float, n: int) -> str:
    """'67.5 ± 1.2' (Dice ×100); one seed shows the mean alone; no result shows '–'."""
    if n == 0 or mean is None or not np.isfinite(mean):
        return DASH
    if n < 2 or sd is None or not np.isfinite(sd):
        return _fmt(mean)
    return f"{_fmt(mean)} ± {_fmt(sd)}"


def _seed_stats(values: pd.Series) -> tuple[float, float, int]:
    v = values.dropna().astype(float)
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if n > 1 else float("nan"), n


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   align: Sequence[str] | None = None) -> str:
    """A pipe table; cells are never truncated."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = [":---" if a == "l" else "---:" if a == "r" else ":---:" for a in align]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# bench table (what `make bench` prints)
# ------------------------------------------------------------------------------------------
def bench_table(results: Path, run_ids: list[str]) -> str:
    """Markdown table for the runs one `dgbench bench` made.

    Rows = methods (one table per dataset/setting); columns = source-val (split "val") and
    each target domain (split "test", by ``domain``), each cell mean ± s.d. over seeds of the
    per-run mean Dice, plus the number of seeds. Selection: "source-val" where the run has it,
    else "last". Failed / incomplete / missing runs are listed under the table."""
    col = collect(results, run_ids)
    col.runs = _refine_states(col.runs)
    runs, metrics = col.runs, col.metrics
    out: list[str] = []
    done = runs[runs["state"] == "done"]
    chosen = {r: _choose_selection(metrics, r, (PRIMARY, REFERENCE)) for r in done["run_id"]}
    no_sel = [r for r, s in chosen.items() if s is None]
    chosen = {r: s for r, s in chosen.items() if s is not None}
    if chosen:
        sel = pd.DataFrame({"run_id": list(chosen), "selection": list(chosen.values())})
        m = metrics.merge(sel, on=["run_id", "selection"], how="inner")
        m = m[m["split"].isin(["val", "test"])]
        m_dom = m.assign(column=np.where(m["split"] == "val", "source-val", "target: " + m["domain"].astype(str)))
        parts = [m_dom]
        test = m[m["split"] == "test"]
        n_dom = test.groupby("dataset")["domain"].nunique()
        multi = test[test["dataset"].map(n_dom) > 1]         # pooled column only where it adds something
        if len(multi):
            parts.append(multi.assign(column="target: all"))
        sc = run_scores(pd.concat(parts, ignore_index=True), by=("column",))
        info = runs.set_index("run_id")
        for k in ("dataset", "setting", "method", "seed"):
            sc[k] = sc["run_id"].map(info[k])
        unconverged = _bad_ids(runs)
        for (ds, setting), g in sc.groupby(["dataset", "setting"], sort=True):
            columns = sorted(g["column"].unique(), key=lambda c: (c != "source-val", c == "target: all", c))
            header = ["method"] + columns + ["seeds"]
            rows = []
            for meth, gm in g.groupby("method", sort=True):
                cells = []
                for c in columns:
                    mean, sd, n = _seed_stats(gm.loc[gm["column"] == c, "dice"])
                    mark = n and bool(set(gm.loc[gm["column"] == c, "run_id"]) & unconverged)
                    cells.append(fmt_cell(mean, sd, n) + (DAGGER if mark else ""))
                rows.append([str(meth), *cells, str(gm["run_id"].nunique())])
            used = sorted({chosen[r] for r in g["run_id"].unique()})
            if used == [PRIMARY]:
                rule = "selection: source-val (best checkpoint on held-out source validation)"
            elif used == [REFERENCE]:
                rule = "selection: last (final checkpoint; no source-val rows found)"
            else:
                fb = sorted(r for r in g["run_id"].unique() if chosen[r] != PRIMARY)
                rule = "selection: source-val, falling back to last for " + ", ".join(fb)
            out.append(f"**{ds}** ({setting}) — {rule}; {g['run_id'].nunique()} run(s)\n")
            out.append(markdown_table(header, rows))
            foot = ("\nCells: mean Dice ×100, mean ± s.d. over seeds. Per run: each foreground class is averaged "
                    "over the cases whose ground truth contains it, then classes are averaged "
                    "(a class absent from every case is excluded).")
            if "source-val" in columns and used != [REFERENCE]:
                foot += " The source-val column is the split used for selection, so it is optimistic."
            out.append("\n\n".join([foot, *_convergence_notes(runs, g["run_id"].unique())]) + "\n")
    else:
        out.append("No finished runs to tabulate.\n")
    bad = runs[runs["state"] != "done"]
    problems = [f"- {r.run_id}: {r.state}" + (f" ({r.error})" if isinstance(r.error, str) and r.error else "")
                for r in bad.itertuples()]
    problems += [f"- {r}: done but metrics.csv has no 'source-val' or 'last' rows" for r in no_sel]
    if problems:
        out.append("Not in the table (failed / incomplete / missing):\n" + "\n".join(problems) + "\n")
    return "\n".join(out).rstrip() + "\n"


def convergence_warning(results: Path, run_ids: list[str]) -> str:
    """'WARNING: k runs did not converge ...' naming each done run of ``run_ids`` that did not
    converge (or whose convergence is unknown) and why; '' when every done run converged."""
    from dgbench.rundir import RunDir
    bad = []
    for rid in run_ids:
        rd = RunDir.for_run(results, rid)
        if not (rd.done_file.exists() and rd.metrics_file.exists()):
            continue
        row = _read_run(rd.path)
        if row["converged"] is not True:
            bad.append(f"  {rid}: {row['convergence']}")
    if not bad:
        return ""
    n = len(bad)
    return (f"WARNING: {n} run{'s' if n != 1 else ''} did not converge and {'are' if n != 1 else 'is'} "
            f"marked {DAGGER} in the table:\n" + "\n".join(bad))


# ------------------------------------------------------------------------------------------
# run accounting: which runs a table is built from, which are missing / failed
# ------------------------------------------------------------------------------------------
def _refine_states(runs: pd.DataFrame) -> pd.DataFrame:
    """'incomplete' -> running / stale / pending from the heartbeat (dgbench.rundir rules)."""
    from dgbench.rundir import RunDir
    runs = runs.copy()
    for i in runs.index[runs["state"] == "incomplete"]:
        st = RunDir(Path(runs.at[i, "path"])).state()
        runs.at[i, "state"] = f"incomplete ({st})"
    return runs


@dataclass
class Accounting:
    used: list[str]                      # run ids averaged in the table
    expected: int                        # size of the grid
    grid: str                            # "2 datasets × 3 methods × 2 seeds"
    missing: list[str]                   # grid cells without a folder
    problems: list[str]                  # failed / incomplete / no-rows runs, one line each
    config_notes: list[str]


def _grid_accounting(runs: pd.DataFrame, cols: list[tuple[str, str]], methods: list[str],
                     seeds: list[int], used: set[str], extra_problems: list[str],
                     config_notes: list[str], col_label) -> Accounting:
    known = runs.dropna(subset=["dataset", "method", "setting", "seed"])
    in_cols = known[[(d, s) in set(cols) for d, s in zip(known["dataset"], known["setting"])]]
    have = set(zip(in_cols["dataset"], in_cols["setting"], in_cols["method"], in_cols["seed"]))
    missing = [f"{col_label((d, s))} / {m} / seed {sd}: no run folder"
               for (d, s) in cols for m in methods for sd in seeds if (d, s, m, sd) not in have]
    problems = []
    for r in in_cols.sort_values(["dataset", "setting", "method", "seed", "run_id"]).itertuples():
        if r.state != "done":
            problems.append(f"{r.run_id}: {r.state}" + (f" — {r.error}" if isinstance(r.error, str) and r.error else ""))
    problems += extra_problems
    n_cols = len(cols)
    grid = (f"{n_cols} column{'s' if n_cols != 1 else ''} × {len(methods)} method{'s' if len(methods) != 1 else ''}"
            f" × {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    return Accounting(used=sorted(used), expected=n_cols * len(methods) * len(seeds), grid=grid,
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


# ------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------
@dataclass
class Table:
    """One table in display form plus its CSV frame; writers turn it into md / tex / csv."""
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]
    notes: list[str]
    csv: pd.DataFrame
    align: list[str] | None = None


def _rank_scores(means: np.ndarray) -> np.ndarray:
    """[method, column] -> ranks within each column (see _rank_rows)."""
    return _rank_rows(np.asarray(means, dtype=float).T).T


def _col_label_main(c: tuple[str, str]) -> str:
    return c[0]


def _col_label_fewshot(c: tuple[str, str]) -> str:
    n = c[1].split("-", 1)[1] if c[1].startswith("fewshot-") else c[1]
    return f"{c[0]} ({n}-shot)"


def _accounting_notes(acc: Accounting, n_used: int) -> list[str]:
    notes = [f"Built from {n_used} of {acc.expected} expected runs ({acc.grid})."]
    notes += [f"Hyperparameter selection: {n}." for n in acc.config_notes]
    if acc.missing:
        notes.append("Missing runs: " + "; ".join(acc.missing) + ".")
    if acc.problems:
        notes.append("Not averaged (failed / incomplete / no rows): " + "; ".join(acc.problems) + ".")
    if not acc.missing and not acc.problems:
        notes.append("No missing or failed runs.")
    return notes


def _extractor_notes(used: pd.DataFrame) -> list[str]:
    """Which feature extractor each MaskGen-family row used (hparam ``extractor``)."""
    by_method: dict[str, set] = {}
    for meth, cfg in zip(used["method"], used["config"]):
        hp = (json.loads(cfg) if cfg else {}).get("hparams") or {}
        if "extractor" in hp:
            name = str(hp["extractor"]) + (f" (weights {hp['extractor_weights']})" if hp.get("extractor_weights") else "")
            by_method.setdefault(str(meth), set()).add(name)
    if not by_method:
        return []
    note = "Feature extractor: " + "; ".join(f"{m}: {', '.join(sorted(v))}" for m, v in sorted(by_method.items())) + "."
    if any(n.split(" ")[0] != "anatomix" for v in by_method.values() for n in v):
        note += " The paper's MaskGen uses the published anatomix weights (extractor 'anatomix')."
    return [note]


def _score_table(col: Collection, selection: str, cols: list[tuple[str, str]], methods: list[str],
                 seeds: list[int], name: str, title: str, col_label, paper: pd.DataFrame | None = None,
                 with_rank: bool = True) -> tuple[Table, pd.DataFrame, Accounting]:
    used, extra, cfg_notes = _select_runs(col, selection, cols)
    m = col.rows(selection, "test")
    m = m[m["run_id"].isin(used["run_id"])]
    sc = run_scores(m, by=("selection",)) if len(m) else pd.DataFrame(columns=["run_id", "dice", "dice_refcompat"])
    info = used.set_index("run_id")
    for k in ("dataset", "setting", "method", "seed"):
        sc[k] = sc["run_id"].map(info[k])
    acc = _grid_accounting(col.runs, cols, methods, seeds, set(sc["run_id"]), extra, cfg_notes, col_label)
    n_exp_seeds = len(seeds)
    # cell statistics
    stats, n_bad = {}, {}
    bad = _bad_ids(col.runs)
    for (d, s, meth), g in sc.groupby(["dataset", "setting", "method"], sort=True):
        mean, sd, n = _seed_stats(g["dice"])
        rmean, rsd, _ = _seed_stats(g["dice_refcompat"])
        stats[(d, s, meth)] = (mean, sd, n, rmean, rsd)
        n_bad[(d, s, meth)] = len(set(g.loc[g["dice"].notna(), "run_id"]) & bad)
    nan5 = (float("nan"), float("nan"), 0, float("nan"), float("nan"))
    means = np.array([[stats.get((d, s, meth), nan5)[0] for (d, s) in cols] for meth in methods]).reshape(len(methods), len(cols))
    ranks = _rank_scores(means) if len(methods) and len(cols) else np.zeros_like(means)
    avg_rank = ranks.mean(axis=1) if len(cols) else np.full(len(methods), np.nan)
    flagged = ~np.isfinite(means).all(axis=1) if len(cols) else np.zeros(len(methods), bool)
    shown = np.round(means * SCALE, DECIMALS)
    best = np.zeros_like(means, dtype=bool)
    for j in range(len(cols)):
        colv = shown[:, j]
        if np.isfinite(colv).any():
            best[:, j] = colv == np.nanmax(colv)
    rank_shown = np.round(avg_rank, 2)
    best_rank = rank_shown == np.nanmin(rank_shown) if len(methods) and np.isfinite(rank_shown).any() else np.zeros(len(methods), bool)

    header = ["method"] + [col_label(c) for c in cols] + (["avg. rank"] if with_rank else [])
    rows, bold, csv_rows = [], [], []
    for i, meth in enumerate(methods):
        cells, b = [], []
        rec = {"method": meth}
        for j, c in enumerate(cols):
            mean, sd, n, rmean, rsd = stats.get((c[0], c[1], meth), nan5)
            nb = n_bad.get((c[0], c[1], meth), 0)
            txt = fmt_cell(mean, sd, n) + (DAGGER if nb else "")
            if 0 < n < n_exp_seeds:
                txt += f" (n={n})"
            cells.append(txt)
            b.append(bool(best[i, j]))
            L = col_label(c)
            rec.update({f"{L}.mean": mean * SCALE, f"{L}.sd": sd * SCALE, f"{L}.n": n,
                        f"{L}.mean_refcompat": rmean * SCALE, f"{L}.sd_refcompat": rsd * SCALE,
                        f"{L}.rank": ranks[i, j], f"{L}.not_converged": nb})
        if with_rank:
            cells.append(f"{avg_rank[i]:.2f}" + ("*" if flagged[i] else ""))
            b.append(bool(best_rank[i]))
            rec.update({"avg_rank": avg_rank[i], "avg_rank_flagged": bool(flagged[i])})
        rec.update({"selection": selection, "n_runs": int(sc.loc[sc["method"] == meth, "run_id"].nunique())})
        rows.append([meth, *cells])
        bold.append([False, *b])
        csv_rows.append(rec)
    notes = [f"Selection: {selection_label(selection)}."]
    paper_here = None
    if paper is not None:
        paper_here = paper[(paper["metric"] == "dice")
                           & paper.apply(lambda r: (r["dataset"], r["setting"]) in set(cols), axis=1)]
    if paper_here is not None and len(paper_here) and REF_METHOD in methods:
        prow, drow = ["maskgen (paper)"], ["Δ maskgen − paper"]
        prec, drec = {"method": "maskgen (paper)"}, {"method": "Δ maskgen − paper"}
        i = methods.index(REF_METHOD)
        for j, c in enumerate(cols):
            p = paper_here[(paper_here["dataset"] == c[0]) & (paper_here["setting"] == c[1])]
            L = col_label(c)
            if len(p):
                pv = float(p["value"].iloc[0])
                ours = means[i, j] * SCALE
                prow.append(f"{pv:.{DECIMALS}f}")
                drow.append(DASH if not np.isfinite(ours) else f"{ours - pv:+.{DECIMALS}f}"
                            + (DAGGER if n_bad.get((c[0], c[1], REF_METHOD)) else ""))
                prec[f"{L}.mean"] = pv
                drec[f"{L}.mean"] = ours - pv
            else:
                prow.append(DASH)
                drow.append(DASH)
        if with_rank:                       # the paper's own rank ranks other methods: not here
            prow.append(DASH)
            drow.append(DASH)
        rows += [prow, drow]
        bold += [[False] * len(prow)] * 2
        csv_rows += [prec, drec]
        srcs = sorted(set(paper_here["source"].astype(str)))
        notes.append("Paper row: published MaskGen Dice ×100 (" + "; ".join(srcs) + "); not ranked. "
                     "The paper counts a class absent from every case as 0 (the CSV's *.mean_refcompat columns); "
                     "Δ uses the clean mean shown here.")
        if (paper_here["setting"] != "full").any():
            notes.append("Published few-shot values are filed under the setting given in the reference file; "
                         "see its note column for how sure that setting is.")
        pr = paper[(paper["metric"] == "avg_rank") & paper["setting"].isin({s for _, s in cols})]
        if with_rank and len(pr):
            notes.append(f"The paper's own average rank for MaskGen, {float(pr['value'].iloc[0]):.2f}, is over the "
                         "paper's methods and datasets; it is not comparable with the avg. rank column and is "
                         "not shown in it.")
    elif paper is not None and REF_METHOD not in methods:
        notes.append(f"Paper row omitted: no '{REF_METHOD}' runs.")
    elif paper is not None:
        notes.append("Paper row omitted: no published number for these columns.")
    notes.append(_MISSING_NOTE)
    if 0 < n_exp_seeds:
        notes.append(f"Expected {n_exp_seeds} seed(s) per cell; '(n=k)' marks cells with fewer; '{DASH}' = no result.")
    if with_rank:
        notes.append("Bold: best per column (equal shown values tie). Rank per column by mean Dice rounded to the "
                     "shown precision, ties averaged; avg. rank = mean over columns. "
                     "* = no result in at least one column, counted as sharing the last places there.")
    notes += _extractor_notes(used[used["run_id"].isin(sc.loc[sc["dice"].notna(), "run_id"])])
    notes += _convergence_notes(col.runs, sc.loc[sc["dice"].notna(), "run_id"])
    notes += _accounting_notes(acc, int(sc["run_id"].nunique()))
    csv = _int_columns(pd.DataFrame(csv_rows))
    table = Table(name=name, title=title, header=header, rows=rows, bold=bold, notes=notes, csv=csv)
    return table, sc, acc


def _per_class_table(col: Collection, selection: str, dataset: str, methods: list[str],
                     seeds: list[int]) -> Table:
    cols = [(dataset, "full")]
    used, extra, cfg_notes = _select_runs(col, selection, cols)
    m = col.rows(selection, "test")
    m = m[m["run_id"].isin(used["run_id"])]
    cs = class_scores(m, by=("selection",))
    rs = run_scores(m, by=("selection",))
    meth_of = used.set_index("run_id")["method"]
    cs["method"] = cs["run_id"].map(meth_of)
    rs["method"] = rs["run_id"].map(meth_of)
    classes = (cs[["class", "class_name"]].drop_duplicates("class").sort_values("class")
               if len(cs) else pd.DataFrame(columns=["class", "class_name"]))
    acc = _grid_accounting(col.runs, cols, methods, seeds, set(rs["run_id"]), extra, cfg_notes, _col_label_main)
    header = ["method"] + [str(n) for n in classes["class_name"]] + ["mean"]
    stats = np.full((len(methods), len(classes) + 1), np.nan)
    cells_all = []
    csv_rows = []
    bad = _bad_ids(col.runs)
    for i, meth in enumerate(methods):
        cells, rec = [], {"method": meth}
        nb = len(set(rs.loc[rs["method"] == meth, "run_id"]) & bad)
        mark = DAGGER if nb else ""
        for j, (k, name) in enumerate(zip(classes["class"], classes["class_name"])):
            mean, sd, n = _seed_stats(cs.loc[(cs["method"] == meth) & (cs["class"] == k), "dice"])
            stats[i, j] = mean
            cells.append(fmt_cell(mean, sd, n) + (mark if n else ""))
            rec.update({f"{name}.mean": mean * SCALE, f"{name}.sd": sd * SCALE, f"{name}.n": n})
        mean, sd, n = _seed_stats(rs.loc[rs["method"] == meth, "dice"])
        rmean, rsd, _ = _seed_stats(rs.loc[rs["method"] == meth, "dice_refcompat"])
        stats[i, -1] = mean
        cells.append(fmt_cell(mean, sd, n) + (mark if n else ""))
        rec.update({"mean.mean": mean * SCALE, "mean.sd": sd * SCALE, "mean.n": n,
                    "mean.mean_refcompat": rmean * SCALE, "mean.sd_refcompat": rsd * SCALE,
                    "selection": selection, "not_converged": nb})
        cells_all.append(cells)
        csv_rows.append(rec)
    shown = np.round(stats * SCALE, DECIMALS)
    bold = np.zeros_like(stats, dtype=bool)
    for j in range(stats.shape[1]):
        if np.isfinite(shown[:, j]).any():
            bold[:, j] = shown[:, j] == np.nanmax(shown[:, j])
    absent = [str(n) for k, n in zip(classes["class"], classes["class_name"])
              if not cs.loc[cs["class"] == k, "dice"].notna().any()]
    notes = [f"Selection: {selection_label(selection)}.",
             "Per class: mean Dice over the target test cases whose ground truth contains the class, "
             "then mean ± s.d. over seeds (Dice ×100); 'mean' is the dataset score of the main table."]
    if absent:
        notes.append("Classes absent from every target case (no Dice; excluded from 'mean', counted as 0 "
                     "in the CSV's mean_refcompat): " + ", ".join(absent) + ".")
    notes.append("Bold: best per column.")
    notes += _convergence_notes(col.runs, rs["run_id"])
    notes += _accounting_notes(acc, int(rs["run_id"].nunique()))
    return Table(name=f"perclass_{_slug(dataset)}", title=f"Per-class target Dice (×100): {dataset}",
                 header=header, rows=[[m, *r] for m, r in zip(methods, cells_all)],
                 bold=[[False, *b] for b in bold.tolist()], notes=notes, csv=_int_columns(pd.DataFrame(csv_rows)))


def _int_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Counts stay integers in the CSV even next to rows that lack them."""
    for c in df.columns:
        if c.endswith((".n", "not_converged")) or c in ("n_runs", "n_cases"):
            df[c] = df[c].astype("Int64")
    return df


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(s)).strip("_") or "x"


# ------------------------------------------------------------------------------------------
# writers
# ------------------------------------------------------------------------------------------
def to_markdown(t: Table) -> str:
    rows = [[f"**{c}**" if b and c != DASH else c for c, b in zip(r, bb)] for r, bb in zip(t.rows, t.bold)]
    parts = [f"## {t.title}", "", markdown_table(t.header, rows, t.align), ""]
    parts += [f"- {n}" for n in t.notes]
    return "\n".join(parts) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "–": "--", "—": "---", "−": r"$-$", "Δ": r"$\Delta$", "×": r"$\times$",
                "†": r"$^\dagger$", "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\rightarrow$", "’": "'", "²": r"$^2$"}


def tex_escape(s: str) -> str:
    out = []
    for ch in str(s):
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in _TEX_UNICODE:
            out.append(_TEX_UNICODE[ch])
        else:
            out.append(ch)
    return "".join(out)


def to_latex(t: Table) -> str:
    """booktabs tabular inside a table float; cells are escaped, never truncated."""
    align = t.align or ["l"] + ["r"] * (len(t.header) - 1)

    def cell(c: str, b: bool) -> str:
        e = tex_escape(c)
        return rf"\textbf{{{e}}}" if b and c != DASH else e

    lines = ["% generated by dgbench.report -- do not edit", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{tex_escape(t.title)}}}", rf"\label{{tab:{_slug(t.name).replace('_', '-')}}}",
             rf"\begin{{tabular}}{{{''.join(align)}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule"]
    n_paper = sum(1 for r in t.rows if r and r[0] in ("maskgen (paper)", "Δ maskgen − paper"))
    for i, (r, bb) in enumerate(zip(t.rows, t.bold)):
        if n_paper and i == len(t.rows) - n_paper:
            lines.append(r"\midrule")
        lines.append(" & ".join(cell(c, b) for c, b in zip(r, bb)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [tex_escape(n) + r"\par" for n in t.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    return t.csv.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def write_table(t: Table, out: Path) -> list[Path]:
    from dgbench.rundir import atomic_write_text
    out = Path(out)
    paths = []
    for ext, text in (("md", to_markdown(t)), ("tex", to_latex(t)), ("csv", to_csv(t))):
        p = out / f"{t.name}.{ext}"
        atomic_write_text(p, text)
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------
# statistics: bootstrap CIs, rank-then-aggregate, paired tests
# ------------------------------------------------------------------------------------------
def _case_cube(m: pd.DataFrame, run_ids: list[str]) -> tuple[np.ndarray, list[str], list]:
    """Dice as an array [run, case, class] (NaN where the class is absent from the GT)."""
    cases = sorted(m["case"].astype(str).unique())
    classes = sorted(m["class"].unique())
    D = np.full((len(run_ids), len(cases), len(classes)), np.nan)
    if len(m):
        ri = m["run_id"].map({r: i for i, r in enumerate(run_ids)}).to_numpy()
        ci = m["case"].astype(str).map({c: i for i, c in enumerate(cases)}).to_numpy()
        ki = m["class"].map({k: i for i, k in enumerate(classes)}).to_numpy()
        ok = ~pd.isna(ri)
        D[ri[ok].astype(int), ci[ok].astype(int), ki[ok].astype(int)] = \
            m["dice"].where(m["gt_present"]).to_numpy(dtype=float)[ok]
    return D, cases, classes


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.isfinite(a).sum(axis=axis)
        s = np.where(np.isfinite(a), a, 0.0).sum(axis=axis)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _rank_rows(scores: np.ndarray) -> np.ndarray:
    """Rank along the last axis (1 = best, ties averaged, NaN last) on the shown precision."""
    from scipy.stats import rankdata
    v = np.round(np.asarray(scores, dtype=float) * SCALE, DECIMALS)
    v = np.where(np.isfinite(v), v, -np.inf)
    return rankdata(-v, method="average", axis=-1)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    n, running = len(order), 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (n - j) * p[i]))
        out[i] = running
    return out


def _wilcoxon(diff: np.ndarray) -> float:
    import warnings
    from scipy.stats import wilcoxon
    if diff.size == 0:
        return float("nan")
    if np.all(diff == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(wilcoxon(diff, alternative="two-sided").pvalue)
        except ValueError:
            return float("nan")


def rank_statistics(col: Collection, selection: str, cols: list[tuple[str, str]], methods: list[str],
                    used_runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                    reference: str = REF_METHOD, col_label=_col_label_main
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranks, pairwise). ranks: one row per (scope, method), scope = column label or "average":
    mean Dice with bootstrap 95% CI over cases, aggregate-then-rank with its CI, P(ranked first),
    rank-then-aggregate. pairwise: Wilcoxon signed-rank over cases of ``reference`` vs every
    other method, per column, Holm-corrected across the whole table."""
    rng = np.random.default_rng(seed)
    M = len(methods)
    m_all = col.rows(selection, "test")
    m_all = m_all[m_all["run_id"].isin(used_runs["run_id"])]
    boot_ranks, point_ranks, rta = [], [], []
    rank_rows, pair_rows = [], []
    for c in cols:
        L = col_label(c)
        ur = used_runs[(used_runs["dataset"] == c[0]) & (used_runs["setting"] == c[1])]
        n_bad = ur[not_converged(ur)].groupby("method").size()         # method -> runs not converged
        run_ids = sorted(ur["run_id"])
        meth_idx = np.array([methods.index(x) for x in ur.set_index("run_id").loc[run_ids, "method"]], dtype=int)
        m = m_all[m_all["run_id"].isin(run_ids)]
        D, cases, _ = _case_cube(m, run_ids)
        P = np.isfinite(D)
        Dz = np.where(P, D, 0.0)

        def method_mean(run_vals: np.ndarray) -> np.ndarray:       # [..., run] -> [..., method]
            out = np.full(run_vals.shape[:-1] + (M,), np.nan)
            for k in range(M):
                sel = meth_idx == k
                if sel.any():
                    out[..., k] = _nanmean(run_vals[..., sel], axis=-1)
            return out

        with np.errstate(invalid="ignore", divide="ignore"):
            cls = Dz.sum(axis=1) / P.sum(axis=1)                     # [run, class]
        point = method_mean(_nanmean(cls, axis=-1))                  # [method]
        pr = _rank_rows(point)
        point_ranks.append(pr)
        if n_boot > 0 and len(cases):
            idx = rng.integers(0, len(cases), size=(n_boot, len(cases)))
            W = np.zeros((n_boot, len(cases)))
            np.add.at(W, (np.repeat(np.arange(n_boot), len(cases)), idx.ravel()), 1.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                num = np.einsum("bc,rck->brk", W, Dz)
                den = np.einsum("bc,rck->brk", W, P.astype(float))
                bcls = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
            bscore = method_mean(_nanmean(bcls, axis=-1))            # [boot, method]
            brank = _rank_rows(bscore)
            boot_ranks.append(brank)
        else:
            bscore = brank = None
        # rank-then-aggregate: rank methods per case on the seed-averaged case mean Dice
        case_run = _nanmean(D, axis=-1)                              # [run, case]
        case_meth = method_mean(case_run.T)                          # [case, method]
        keep = np.isfinite(case_meth).any(axis=1)
        rta_c = _rank_rows(case_meth[keep]).mean(axis=0) if keep.any() else np.full(M, np.nan)
        rta.append(rta_c)
        for k, meth in enumerate(methods):
            row = {"scope": L, "method": meth, "mean_dice": point[k] * SCALE,
                   "dice_ci_lo": np.nan, "dice_ci_hi": np.nan, "rank": pr[k],
                   "rank_ci_lo": np.nan, "rank_ci_hi": np.nan, "p_first": np.nan,
                   "rank_then_aggregate": rta_c[k], "n_cases": int(keep.sum()),
                   "n_runs": int((meth_idx == k).sum()), "not_converged": int(n_bad.get(meth, 0))}
            if bscore is not None and np.isfinite(point[k]):
                row["dice_ci_lo"], row["dice_ci_hi"] = np.percentile(bscore[:, k], [2.5, 97.5]) * SCALE
                row["rank_ci_lo"], row["rank_ci_hi"] = np.percentile(brank[:, k], [2.5, 97.5])
                row["p_first"] = float(np.mean(brank[:, k] == brank.min(axis=1)))
            rank_rows.append(row)
        # paired tests
        if reference in methods:
            r = methods.index(reference)
            for k, meth in enumerate(methods):
                if k == r:
                    continue
                both = np.isfinite(case_meth[:, r]) & np.isfinite(case_meth[:, k])
                diff = (case_meth[both, r] - case_meth[both, k]) * SCALE
                lo = hi = np.nan
                if n_boot > 0 and diff.size:
                    bi = rng.integers(0, diff.size, size=(n_boot, diff.size))
                    lo, hi = np.percentile(diff[bi].mean(axis=1), [2.5, 97.5])
                pair_rows.append({"scope": L, "method": meth, "versus": reference, "n_cases": int(diff.size),
                                  "mean_diff": diff.mean() if diff.size else np.nan,
                                  "median_diff": np.median(diff) if diff.size else np.nan,
                                  "diff_ci_lo": lo, "diff_ci_hi": hi, "p_wilcoxon": _wilcoxon(diff),
                                  "not_converged": int(n_bad.get(meth, 0)),
                                  "versus_not_converged": int(n_bad.get(reference, 0))})
    # average over columns
    if cols:
        avg_point = np.mean(point_ranks, axis=0)
        avg_rta = np.mean(rta, axis=0)
        avg_boot = np.mean(boot_ranks, axis=0) if len(boot_ranks) == len(cols) and boot_ranks else None
        for k, meth in enumerate(methods):
            row = {"scope": "average", "method": meth, "mean_dice": np.nan, "dice_ci_lo": np.nan,
                   "dice_ci_hi": np.nan, "rank": avg_point[k], "rank_ci_lo": np.nan, "rank_ci_hi": np.nan,
                   "p_first": np.nan, "rank_then_aggregate": avg_rta[k], "n_cases": np.nan,
                   "n_runs": int(sum(r["n_runs"] for r in rank_rows if r["method"] == meth)),
                   "not_converged": int(sum(r["not_converged"] for r in rank_rows if r["method"] == meth))}
            if avg_boot is not None:
                row["rank_ci_lo"], row["rank_ci_hi"] = np.percentile(avg_boot[:, k], [2.5, 97.5])
                row["p_first"] = float(np.mean(np.isclose(avg_boot[:, k], avg_boot.min(axis=1))))
            rank_rows.append(row)
    ranks = pd.DataFrame(rank_rows, columns=["scope", "method", "mean_dice", "dice_ci_lo", "dice_ci_hi",
                                             "rank", "rank_ci_lo", "rank_ci_hi", "p_first",
                                             "rank_then_aggregate", "n_cases", "n_runs", "not_converged"])
    ranks = _int_columns(ranks)
    ranks["selection"] = selection
    ranks["bootstrap"] = n_boot
    pairs = pd.DataFrame(pair_rows, columns=["scope", "method", "versus", "n_cases", "mean_diff", "median_diff",
                                             "diff_ci_lo", "diff_ci_hi", "p_wilcoxon", "not_converged",
                                             "versus_not_converged"])
    pairs["p_holm"] = holm(pairs["p_wilcoxon"].to_numpy()) if len(pairs) else []
    pairs["significant"] = pairs["p_holm"] < 0.05
    pairs["selection"] = selection
    return ranks, pairs


def _ci(lo: float, hi: float, fmt: str = "{:.1f}") -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return DASH
    return f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _num(v: float, fmt: str = "{:.2f}") -> str:
    return DASH if v is None or not np.isfinite(v) else fmt.format(v)


def _p(v: float) -> str:
    if v is None or not np.isfinite(v):
        return DASH
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def rank_tables(ranks: pd.DataFrame, pairs: pd.DataFrame, selection: str, n_boot: int, seed: int,
                methods: list[str], reference: str = REF_METHOD, runs: pd.DataFrame | None = None
                ) -> list[Table]:
    """Average-rank, per-dataset and paired-test tables. ``runs``: the runs behind them, for
    the note on runs that did not converge (their methods carry a †)."""
    def name(meth: str, n_bad) -> str:
        return f"{meth}{DAGGER}" if n_bad else meth

    cnotes = _convergence_notes(runs, runs["run_id"], subject="of this method") if runs is not None else []
    avg = ranks[ranks["scope"] == "average"]
    rows = [[name(r.method, r.not_converged), _num(r.rank), _ci(r.rank_ci_lo, r.rank_ci_hi, "{:.2f}"), _num(r.p_first),
             _num(r.rank_then_aggregate)] for r in avg.itertuples()]
    notes = [f"Selection: {selection_label(selection)}.",
             "avg. rank: rank per dataset by mean Dice (shown precision, ties averaged), mean over datasets. "
             "rank-then-aggregate: rank per target case by the case mean Dice (seed-averaged), mean over cases, "
             "then over datasets.",
             (f"Bootstrap: {n_boot} resamples of target cases within each dataset (seed {seed}); "
              "95% percentile intervals; P(first) = share of resamples in which the method has the best "
              "(possibly shared) average rank." if n_boot > 0 else "Bootstrap disabled (--bootstrap 0).")]
    t1 = Table(name="ranks", title="Average rank (aggregate-then-rank and rank-then-aggregate)",
               header=["method", "avg. rank", "95% CI", "P(first)", "rank-then-aggregate"],
               rows=rows, bold=[[False] * 5 for _ in rows], notes=notes + cnotes, csv=ranks)
    per = ranks[ranks["scope"] != "average"]
    rows2 = [[r.scope, name(r.method, r.not_converged), _num(r.mean_dice, "{:.1f}"), _ci(r.dice_ci_lo, r.dice_ci_hi),
              _num(r.rank, "{:.1f}"), _ci(r.rank_ci_lo, r.rank_ci_hi), _num(r.rank_then_aggregate)]
             for r in per.itertuples()]
    t2 = Table(name="ranks_per_dataset", title="Mean Dice (×100) with bootstrap 95% CI over target cases",
               header=["dataset", "method", "mean Dice", "95% CI", "rank", "rank 95% CI", "rank-then-aggregate"],
               rows=rows2, bold=[[False] * 7 for _ in rows2],
               notes=["Mean Dice: seed-averaged dataset score (clean mean, see main table)."] + cnotes, csv=per,
               align=["l", "l", "r", "r", "r", "r", "r"])
    if len(pairs):
        rows3 = [[r.scope, f"{name(r.versus, r.versus_not_converged)} vs {name(r.method, r.not_converged)}",
                  str(r.n_cases), _num(r.mean_diff, "{:+.1f}"),
                  _num(r.median_diff, "{:+.1f}"), _ci(r.diff_ci_lo, r.diff_ci_hi, "{:+.1f}"), _p(r.p_wilcoxon),
                  _p(r.p_holm)] for r in pairs.itertuples()]
        pnotes = [f"Two-sided Wilcoxon signed-rank test over target cases on the seed-averaged case mean Dice "
                  f"(×100), {reference} minus the other method; Holm correction across all {len(pairs)} "
                  f"comparisons in this table; CI: paired bootstrap of the mean difference."] + cnotes
    else:
        rows3 = []
        pnotes = [f"No paired tests: method '{reference}' not among the results ({', '.join(methods) or 'none'})."
                  if reference not in methods else "No paired tests: only one method."]
    t3 = Table(name="pairwise", title=f"Paired tests against {reference}",
               header=["dataset", "comparison", "cases", "mean diff.", "median diff.", "95% CI", "p", "p (Holm)"],
               rows=rows3, bold=[[False] * 8 for _ in rows3], notes=pnotes, csv=pairs,
               align=["l", "l", "r", "r", "r", "r", "r", "r"])
    return [t1, t2, t3]


# ------------------------------------------------------------------------------------------
# published numbers
# ------------------------------------------------------------------------------------------
def default_paper_file() -> Path:
    return Path(__file__).resolve().parents[1] / "results" / "reference" / "maskgen_paper.csv"


def load_paper(path: Path | None = None) -> pd.DataFrame:
    """The published MaskGen numbers (columns dataset, setting, method, metric, value, source)."""
    path = Path(path) if path else default_paper_file()
    df = pd.read_csv(path, comment="#", dtype={"dataset": str, "setting": str, "method": str,
                                               "metric": str, "source": str})
    missing = {"dataset", "setting", "method", "metric", "value", "source"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    from dgbench.registry import DATASETS, load_plugins
    from dgbench.spec import SETTING_RE
    load_plugins()
    known = set(DATASETS.names()) | {"all"}
    bad = [f"line {i + 2}: dataset {r.dataset!r}" for i, r in enumerate(df.itertuples()) if r.dataset not in known]
    bad += [f"line {i + 2}: setting {r.setting!r}" for i, r in enumerate(df.itertuples())
            if not SETTING_RE.match(str(r.setting))]
    if bad:
        raise ValueError(f"{path}: {'; '.join(bad)}. Use a registered dataset name ({', '.join(sorted(known))}) "
                         f"and a setting 'full' or 'fewshot-N'; a misnamed row would silently show as '–'.")
    return df[df["method"] == REF_METHOD]


# ------------------------------------------------------------------------------------------
# figures (matplotlib's object API: no pyplot state, no display needed)
# ------------------------------------------------------------------------------------------
def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, bbox_inches="tight", metadata={"Software": None} if ext == "png" else None)
        tmp.replace(p)
        paths.append(p)
    return paths


def fig_dice_bars(main_csv: pd.DataFrame, labels: list[str], methods: list[str], out: Path,
                  stem: str = "dice_bars", title: str = "") -> list[Path]:
    """Grouped bars: mean Dice per dataset and method, error bars = s.d. over seeds."""
    if not labels or not methods:
        return []
    df = main_csv.set_index("method")
    fig = _new_figure(max(4.0, 1.1 * len(labels) * max(1, len(methods)) * 0.35 + 2), 3.4)
    ax = fig.add_subplot(111)
    width = 0.8 / len(methods)
    x = np.arange(len(labels))
    cmap = _method_colors(methods)
    for i, meth in enumerate(methods):
        mean = np.array([df.at[meth, f"{L}.mean"] if f"{L}.mean" in df else np.nan for L in labels], float)
        sd = np.array([df.at[meth, f"{L}.sd"] if f"{L}.sd" in df else np.nan for L in labels], float)
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, np.nan_to_num(mean), width, yerr=np.nan_to_num(sd),
               capsize=2, label=meth, color=cmap[meth], edgecolor="black", linewidth=0.4)
        for xi in xs[~np.isfinite(mean)]:                  # no result: say so, not a zero bar
            ax.text(xi, 1.5, "n/a", ha="center", va="bottom", rotation=90, fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("target mean Dice (×100)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, ncol=min(len(methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out, stem)


def fig_avg_rank(ranks: pd.DataFrame, out: Path, stem: str = "avg_rank", title: str = "") -> list[Path]:
    """Horizontal bars of the average rank (lower is better) with bootstrap 95% CIs."""
    avg = ranks[ranks["scope"] == "average"].sort_values(["rank", "method"], ascending=[False, True])
    if avg.empty:
        return []
    fig = _new_figure(5.0, 0.45 * len(avg) + 1.2)
    ax = fig.add_subplot(111)
    y = np.arange(len(avg))
    rank = avg["rank"].to_numpy(float)
    lo, hi = avg["rank_ci_lo"].to_numpy(float), avg["rank_ci_hi"].to_numpy(float)
    err = np.vstack([np.nan_to_num(rank - lo), np.nan_to_num(hi - rank)])
    cmap = _method_colors(sorted(avg["method"]))
    ax.barh(y, rank, xerr=err if np.isfinite(lo).any() else None, capsize=3,
            color=[cmap[m] for m in avg["method"]], edgecolor="black", linewidth=0.4)
    ax.set_yticks(y)
    ax.set_yticklabels(avg["method"])
    ax.set_xlabel("average rank over datasets (1 = best)" + ("; bars: bootstrap 95% CI" if np.isfinite(lo).any() else ""))
    ax.set_xlim(0, max(len(avg), np.nanmax(np.r_[rank, hi[np.isfinite(hi)]])) + 0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out, stem)


def _method_colors(methods: list[str]) -> dict:
    from matplotlib import colormaps
    cm = colormaps["tab10"] if len(methods) <= 10 else colormaps["tab20"]
    return {m: cm(i % cm.N) for i, m in enumerate(sorted(methods))}


def _load_prediction(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            d = {k: np.asarray(z[k]) for k in ("image", "label", "pred")}
    except (OSError, KeyError, ValueError) as e:
        log.warning("skipping %s: %s", path, e)
        return None
    if not (d["image"].ndim == d["label"].ndim == d["pred"].ndim == 3
            and d["image"].shape == d["label"].shape == d["pred"].shape):
        log.warning("skipping %s: image/label/pred must be 3-D arrays of one shape", path)
        return None
    return d


def fig_slices(col: Collection, used_runs: pd.DataFrame, selection: str, dataset: str, out: Path,
               methods: list[str] | None = None) -> list[Path]:
    """One target case, the slice with the most foreground: image, GT, each method's prediction.

    Reads ``<run>/predictions/<case>.npz`` (see the module docstring). Returns [] and logs a
    note when no run of the dataset has predictions."""
    ur = used_runs[(used_runs["dataset"] == dataset) & (used_runs["setting"] == "full")]
    avail: dict[str, dict[str, Path]] = {}               # case -> method -> file (lowest seed)
    for r in ur.sort_values(["method", "seed", "run_id"]).itertuples():
        pdir = Path(r.path) / "predictions"
        if not pdir.is_dir():
            continue
        for f in sorted(pdir.glob("*.npz")):
            avail.setdefault(f.stem, {}).setdefault(r.method, f)
    if not avail:
        log.info("no predictions/<case>.npz in any %s run: example-slice figure skipped", dataset)
        return []
    case = sorted(avail, key=lambda c: (-len(avail[c]), c))[0]
    files = avail[case]
    meths = [m for m in (methods or sorted(files)) if m in files]
    preds = {m: _load_prediction(files[m]) for m in meths}
    preds = {m: d for m, d in preds.items() if d is not None}
    if not preds:
        log.info("predictions for %s case %s unreadable: example-slice figure skipped", dataset, case)
        return []
    first = next(iter(preds.values()))
    img, gt = first["image"].astype(float), first["label"].astype(int)
    z = int(np.argmax((gt > 0).reshape(gt.shape[0], -1).sum(axis=1)))
    # case Dice from metrics.csv, for the panel titles
    m = col.rows(selection, "test")
    run_of = {meth: files[meth].parent.parent.name for meth in preds}
    mm = m[(m["run_id"].isin(run_of.values())) & (m["case"].astype(str) == case)]
    case_dice = mm.assign(d=mm["dice"].where(mm["gt_present"])).groupby("run_id")["d"].mean()
    n_lab = int(max(gt.max(), max(int(d["pred"].max()) for d in preds.values()), 1))
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    base = colormaps["tab20"] if n_lab > 10 else colormaps["tab10"]
    lab_cmap = ListedColormap([base(i % base.N) for i in range(n_lab)])
    panels = [("image", None), ("ground truth", gt)] + [(meth, d["pred"].astype(int)) for meth, d in preds.items()]
    fig = _new_figure(2.2 * len(panels), 2.6)
    lo, hi = np.percentile(img[z], [1, 99]) if np.ptp(img[z]) > 0 else (0.0, 1.0)
    for i, (name, lab) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if lab is not None:
            s = lab[z]
            ax.imshow(np.ma.masked_where(s == 0, s - 1), cmap=lab_cmap, vmin=0, vmax=n_lab - 1, alpha=0.55,
                      interpolation="nearest")
        t = name
        if name in run_of and run_of[name] in case_dice.index and np.isfinite(case_dice[run_of[name]]):
            t += f"\nDice {case_dice[run_of[name]] * SCALE:.1f}"
        ax.set_title(t, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{dataset}: target case {case}, slice {z} (axis 0)", fontsize=9)
    return _save(fig, out, f"slices_{_slug(dataset)}")


# ------------------------------------------------------------------------------------------
# everything
# ------------------------------------------------------------------------------------------
def _setting_order(s: str) -> tuple[int, int]:
    m = SETTING_FEWSHOT_RE.match(s)
    return (1, int(m.group(1))) if m else (0, 0)


SETTING_FEWSHOT_RE = re.compile(r"^fewshot-(\d+)$")


def write_tables(results: Path, out: Path | None = None, selection: str = PRIMARY,
                 paper: Path | bool | None = None, n_boot: int = 1000, seed: int = 0,
                 figures: bool = True, versus: str = REF_METHOD) -> dict[str, list[Path]]:
    """Build every table (md, tex, csv) and figure (png, pdf) from ``<results>/runs``.

    ``paper``: None/False = no paper row; True = the committed reference file; or a path.
    ``versus``: the method every other one is tested against in ``pairwise``.
    Returns {kind: [paths]}; the main Markdown is ``out/main.md``."""
    results = Path(results)
    out = Path(out) if out is not None else results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    col = collect(results)
    col.runs = _refine_states(col.runs)
    runs = col.runs
    unknown = runs[runs[["dataset", "method", "setting", "seed"]].isna().any(axis=1)]
    if len(unknown):
        log.warning("run folders without spec.json or a parseable name, not counted: %s",
                    ", ".join(unknown["run_id"]))
    known = runs.drop(index=unknown.index)
    methods = sorted(known["method"].astype(str).unique())
    seeds = sorted(int(s) for s in known["seed"].unique())
    pairs_ds = sorted({(str(d), str(s)) for d, s in zip(known["dataset"], known["setting"])},
                      key=lambda c: (_setting_order(c[1]), c[0]))
    full_cols = [c for c in pairs_ds if c[1] == "full"]
    few_cols = [c for c in pairs_ds if c[1] != "full"]
    have_sel = set(col.metrics["selection"].dropna().unique()) if len(col.metrics) else set()
    primary = selection
    fallback_note = None
    if primary not in have_sel and primary == PRIMARY and REFERENCE in have_sel:
        primary = REFERENCE
        fallback_note = f"No run has '{PRIMARY}' rows; tables fall back to '{REFERENCE}'."
    if have_sel and primary not in have_sel:
        log.warning("no run has '%s' rows (found: %s); the main tables will be empty",
                    primary, ", ".join(sorted(have_sel)))
    paper_df = None
    if paper:
        paper_df = load_paper(None if paper is True else Path(paper))
    written: dict[str, list[Path]] = {"tables": [], "figures": []}

    def emit(t: Table) -> None:
        if fallback_note:
            t.notes.insert(0, fallback_note)
        written["tables"] += write_table(t, out)

    oracle = is_oracle(primary)
    tag = " — ORACLE (uses target labels)" if oracle else ""
    main, main_sc, _ = _score_table(col, primary, full_cols, methods, seeds, "main",
                                    f"Target-domain mean Dice (×100), selection '{primary}'{tag}",
                                    _col_label_main, paper=paper_df)
    emit(main)
    few, _, _ = _score_table(col, primary, few_cols, methods, seeds, "fewshot",
                             f"Few-shot target-domain mean Dice (×100), selection '{primary}'{tag}",
                             _col_label_fewshot, paper=paper_df)
    if not few_cols:
        few.notes.insert(0, "No few-shot runs (setting fewshot-N) found.")
    emit(few)
    for ds, _s in full_cols:
        emit(_per_class_table(col, primary, ds, methods, seeds))
    for other in sorted(have_sel - {primary}):
        t, _, _ = _score_table(col, other, full_cols, methods, seeds, f"main_{_slug(other)}",
                               f"Target-domain mean Dice (×100), selection '{other}'"
                               + (" — ORACLE (uses target labels)" if is_oracle(other) else ""),
                               _col_label_main)
        emit(t)
    used, _, _ = _select_runs(col, primary, full_cols)
    ranks, pairs = rank_statistics(col, primary, full_cols, methods, used, n_boot=n_boot, seed=seed,
                                   reference=versus)
    t_rank, t_per, t_pair = rank_tables(ranks, pairs, primary, n_boot, seed, methods, reference=versus,
                                        runs=used)
    from dgbench.rundir import atomic_write_text
    csv_kw = dict(index=False, float_format="%.6f", lineterminator="\n")
    atomic_write_text(out / "ranks.csv", ranks.to_csv(**csv_kw))
    atomic_write_text(out / "pairwise.csv", pairs.to_csv(**csv_kw))
    md = "\n".join(to_markdown(t) for t in (t_rank, t_per, t_pair))
    tex = "\n".join(to_latex(t) for t in (t_rank, t_per, t_pair))
    atomic_write_text(out / "ranks.md", md)
    atomic_write_text(out / "ranks.tex", tex)
    written["tables"] += [out / "ranks.csv", out / "pairwise.csv", out / "ranks.md", out / "ranks.tex"]
    if figures:
        fdir = out / "figures"
        written["figures"] += fig_dice_bars(main.csv[main.csv["method"].isin(methods)],
                                            [_col_label_main(c) for c in full_cols], methods, fdir,
                                            title=f"selection '{primary}'{tag}; error bars: s.d. over seeds")
        written["figures"] += fig_avg_rank(ranks, fdir, title=f"selection '{primary}'{tag}")
        for ds, _s in full_cols:
            written["figures"] += fig_slices(col, used, primary, ds, fdir, methods)
    return written


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "tables", help="tables, ranks, statistics and figures from run folders",
        description="Rebuild every table (Markdown, LaTeX booktabs, CSV), rank/statistics file and figure "
                    "from <results>/runs. Dice: per run, each foreground class averaged over the target "
                    "cases that contain it, then over classes (absent-everywhere classes excluded; the "
                    "reference-compatible mean that counts them as 0 is in the CSV). A value built from a "
                    "run that did not converge (dgbench.convergence; see done.json) is marked †, with the "
                    "reason under the table.")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder holding runs/ (default: results)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/tables)")
    p.add_argument("--selection", default=PRIMARY,
                   help="model-selection rule for the main tables: source-val (default, primary), last "
                        "(reference protocol) or any rule present in metrics.csv; rules that use target "
                        "labels are labelled ORACLE. Other rules found get main_<rule> tables.")
    p.add_argument("--paper", nargs="?", const=True, default=None, metavar="CSV",
                   help="add the published MaskGen row and the difference to the main table "
                        f"(default file: {default_paper_file()})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples of target cases for CIs (default 1000; 0 = off)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--versus", default=REF_METHOD, metavar="METHOD",
                   help=f"method the others are tested against in pairwise.csv (default {REF_METHOD}; "
                        f"e.g. erm to test baselines against the plain recipe)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG/PDF figures")
    p.set_defaults(func=_cmd_tables)


def _cmd_tables(args: argparse.Namespace) -> int:
    if not (Path(args.results) / "runs").is_dir():
        print(f"no run folders under {Path(args.results) / 'runs'}")
        return 1
    written = write_tables(args.results, args.out, selection=args.selection, paper=args.paper,
                           n_boot=args.bootstrap, seed=args.seed, figures=not args.no_figures,
                           versus=args.versus)
    out = Path(args.out) if args.out is not None else Path(args.results) / "tables"
    print((out / "main.md").read_text())
    print(f"wrote {len(written['tables'])} table files and {len(written['figures'])} figure files to {out}")
    return 0
