"""Table objects: the main / few-shot score tables, per-class tables and the published rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dgbench.report.common import DAGGER, DASH, DECIMALS, ORACLE_NOTE, REF_METHOD, SCALE, Table, _MISSING_NOTE, _col_label_main, _int_columns, _rank_scores, _seed_stats, _slug, fmt_cell
from dgbench.selection import rule
from dgbench.report.collect import Accounting, Collection, _bad_ids, _convergence_notes, _grid_accounting, _select_runs, class_scores, run_scores

# ------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------


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
    acc = _grid_accounting(col, cols, methods, seeds, set(sc["run_id"]), extra, cfg_notes, col_label)
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
    notes = [f"Selection: {rule(selection).title}."] + ([ORACLE_NOTE] if rule(selection).oracle else [])
    paper_here = None
    if paper is not None:
        wanted = set(cols)
        in_cols = [(d, s) in wanted for d, s in zip(paper["dataset"], paper["setting"])]
        paper_here = paper[(paper["metric"] == "dice") & pd.Series(in_cols, index=paper.index, dtype=bool)]
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
    acc = _grid_accounting(col, cols, methods, seeds, set(rs["run_id"]), extra, cfg_notes, _col_label_main)
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
    notes = [f"Selection: {rule(selection).title}.",
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


# ------------------------------------------------------------------------------------------
# published numbers
# ------------------------------------------------------------------------------------------
def default_paper_file() -> Path:
    return Path(__file__).resolve().parents[2] / "results" / "reference" / "maskgen_paper.csv"


def load_paper(path: Path | None = None) -> pd.DataFrame:
    """The published MaskGen numbers (columns dataset, setting, method, metric, value, source).
    A file that cannot be read or has a misnamed row is a UserError naming the file and the fix."""
    from dgbench.errors import UserError
    path = Path(path) if path else default_paper_file()
    columns = ["dataset", "setting", "method", "metric", "value", "source"]
    fix = f"give --paper a CSV file with the header {','.join(columns)} (see {default_paper_file().name})"
    try:
        df = pd.read_csv(path, comment="#", dtype={"dataset": str, "setting": str, "method": str,
                                                   "metric": str, "source": str})
    except OSError as e:
        raise UserError(f"--paper {path}: {e.strerror or e}; {fix}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise UserError(f"--paper {path}: not a readable CSV ({str(e).strip().splitlines()[0]}); {fix}") from None
    missing = set(columns) - set(df.columns)
    if missing:
        raise UserError(f"--paper {path}: missing column(s) {sorted(missing)}; {fix}")
    from dgbench.registry import DATASETS, load_plugins
    from dgbench.spec import SETTING_RE
    load_plugins()
    known = set(DATASETS.names()) | {"all"}
    bad = [f"line {i + 2}: dataset {r.dataset!r}" for i, r in enumerate(df.itertuples()) if r.dataset not in known]
    bad += [f"line {i + 2}: setting {r.setting!r}" for i, r in enumerate(df.itertuples())
            if not SETTING_RE.match(str(r.setting))]
    if bad:
        raise UserError(f"--paper {path}: {'; '.join(bad)}. Use a registered dataset name ({', '.join(sorted(known))}) "
                        f"and a setting 'full' or 'fewshot-N'; a misnamed row would silently show as '–'.")
    return df[df["method"] == REF_METHOD]
