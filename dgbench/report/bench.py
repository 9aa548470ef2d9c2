"""The table and the convergence warning that `dgbench bench` prints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dgbench.report.common import DAGGER, PRIMARY, _seed_stats, fmt_cell, markdown_table
from dgbench.selection import LAST, rule
from dgbench.report.collect import _bad_ids, _convergence_notes, _read_run, collect, run_scores

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
    runs, metrics = col.runs, col.metrics
    out: list[str] = []
    done = runs[runs["state"] == "done"]
    have = metrics.groupby("run_id")["selection"].agg(set) if len(metrics) else {}
    chosen = {r: rule(PRIMARY).choose(have.get(r, set())) for r in done["run_id"]}   # falls back to last, named
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
                header_rule = "selection: source-val (best checkpoint on held-out source validation)"
            elif used == [LAST]:
                header_rule = "selection: last (final checkpoint; no source-val rows found)"
            else:
                fb = sorted(r for r in g["run_id"].unique() if chosen[r] != PRIMARY)
                header_rule = "selection: source-val, falling back to last for " + ", ".join(fb)
            out.append(f"**{ds}** ({setting}) — {header_rule}; {g['run_id'].nunique()} run(s)\n")
            out.append(markdown_table(header, rows))
            foot = ("\nCells: mean Dice ×100, mean ± s.d. over seeds. Per run: each foreground class is averaged "
                    "over the cases whose ground truth contains it, then classes are averaged "
                    "(a class absent from every case is excluded).")
            if "source-val" in columns and used != [LAST]:
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
