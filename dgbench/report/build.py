"""`dgbench tables`: build every table and figure from a results folder, and its CLI."""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path


from dgbench.report.common import PRIMARY, REF_METHOD, Table, _col_label_fewshot, _col_label_main, _slug
from dgbench.selection import rule
from dgbench.report.collect import _select_runs, collect
from dgbench.report.render import to_latex, to_markdown, write_table
from dgbench.report.tables import _per_class_table, _score_table, default_paper_file, load_paper
from dgbench.report.stats import rank_statistics, rank_tables
from dgbench.report.figures import fig_avg_rank, fig_dice_bars, fig_slices

log = logging.getLogger("dgbench.report")


# ------------------------------------------------------------------------------------------
# everything
# ------------------------------------------------------------------------------------------
def _setting_order(s: str) -> tuple[int, int]:
    m = SETTING_FEWSHOT_RE.match(s)
    return (1, int(m.group(1))) if m else (0, 0)


SETTING_FEWSHOT_RE = re.compile(r"^fewshot-(\d+)$")


def write_tables(results: Path, out: Path | None = None, selection: str = PRIMARY,
                 paper: Path | bool | None = None, n_boot: int = 1000, seed: int = 0,
                 figures: bool = True, versus: str = REF_METHOD, sweep=None) -> dict[str, list[Path]]:
    """Build every table (md, tex, csv) and figure (png, pdf) from ``<results>/runs``.

    ``paper``: None/False = no paper row; True = the committed reference file; or a path.
    ``versus``: the method every other one is tested against in ``pairwise``.
    ``sweep``: a sweep file, or a list of them; their runs are the expected grid (_collect_sweep).
    Returns {kind: [paths]}; the main Markdown is ``out/main.md``."""
    results = Path(results)
    out = Path(out) if out is not None else results / "tables"
    paper_df = load_paper(None if paper is True else Path(paper)) if paper else None     # refused before any work
    sweeps = [Path(f) for f in ([sweep] if isinstance(sweep, (str, Path)) else sweep or [])]
    col, top_notes = _collect_sweep(results, sweeps) if sweeps else (collect(results), [])
    out.mkdir(parents=True, exist_ok=True)
    runs = col.runs
    unknown = runs[runs[["dataset", "method", "setting", "seed"]].isna().any(axis=1)]
    if len(unknown):
        log.warning("run folders without a run spec, not counted: %s",
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
    if primary not in have_sel and rule(primary).fallback in have_sel:     # the one fallback policy:
        primary = rule(primary).fallback                                    # dgbench.selection
        top_notes.insert(0, f"No run has '{selection}' rows; tables fall back to '{primary}'.")
    if have_sel and primary not in have_sel:
        log.warning("no run has '%s' rows (found: %s); the main tables will be empty",
                    primary, ", ".join(sorted(have_sel)))
    written: dict[str, list[Path]] = {"tables": [], "figures": []}

    def emit(t: Table) -> None:
        t.notes[0:0] = top_notes
        written["tables"] += write_table(t, out)

    oracle = rule(primary).oracle
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
        if rule(other).oracle:
            for t in _oracle_tables(col, other, full_cols, few_cols, methods, seeds, paper_df):
                emit(t)
            continue
        t, _, _ = _score_table(col, other, full_cols, methods, seeds, f"main_{_slug(other)}",
                               f"Target-domain mean Dice (×100), selection '{other}'", _col_label_main)
        emit(t)
    used, _, _ = _select_runs(col, primary, full_cols)
    ranks, pairs = rank_statistics(col, primary, full_cols, methods, used, n_boot=n_boot, seed=seed,
                                   reference=versus)
    t_rank, t_per, t_pair = rank_tables(ranks, pairs, primary, n_boot, seed, methods, reference=versus,
                                        runs=used)
    from dgbench.atomic import atomic_write_text
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


def _collect_sweep(results: Path, sweeps: list[Path]):
    """The runs the sweep files declare (dgbench.orchestrate.sweep), read from ``results``: the
    expected grid is theirs, a declared run without a folder is missing (labelled from the sweep)
    and counts as such in the notes, and a folder the sweep does not declare is left out with a
    note. Returns (Collection, notes for the top of every table)."""
    from dgbench.orchestrate.sweep import load_sweep, sweep_specs
    specs = {s.run_id: s for f in sweeps for s in sweep_specs(load_sweep(f))}
    col = collect(results, list(specs))
    runs = col.runs
    for i in runs.index[runs["state"] == "missing"]:
        sp = specs[runs.at[i, "run_id"]]
        runs.loc[i, ["dataset", "method", "setting", "seed"]] = [sp.dataset, sp.method, sp.setting, sp.seed]
    col.declared = {(s.dataset, s.setting, s.method, s.seed) for s in specs.values()}
    col.declared_by = name = " + ".join(f.name for f in sweeps)
    runs_dir = results / "runs"
    stray = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in specs) if runs_dir.is_dir() else []
    notes = []
    if stray:
        shown = ", ".join(stray[:10]) + (f" and {len(stray) - 10} more" if len(stray) > 10 else "")
        notes.append(f"Run folders that {name} does not declare, left out ({len(stray)}): {shown}.")
    return col, notes


def _oracle_tables(col, selection: str, full_cols, few_cols, methods, seeds, paper_df) -> list[Table]:
    """main_<rule> (and fewshot_<rule> where few-shot runs have its rows) for a rule that uses
    target labels: labelled ORACLE, with the published rows beside ours (they were selected
    that way). Columns without any row of the rule (a split without target-val cases) are
    left out and named in a note."""
    rows = col.rows(selection)
    have = set(zip(rows["dataset"].astype(str), rows["setting"].astype(str)))
    out = []
    for kind, cols, label, what in (("main", full_cols, _col_label_main, "Target-domain mean Dice"),
                                    ("fewshot", few_cols, _col_label_fewshot, "Few-shot target-domain mean Dice")):
        here = [c for c in cols if c in have]
        if not here:
            continue
        t, _, _ = _score_table(col, selection, here, methods, seeds, f"{kind}_{_slug(selection)}",
                               f"{what} (×100), selection '{selection}' — ORACLE (uses target labels)",
                               label, paper=paper_df)
        left = [label(c) for c in cols if c not in have]
        if left:
            t.notes.insert(2, f"Columns without '{selection}' rows (no target-val cases in their split), left out: "
                              + ", ".join(left) + ".")
        out.append(t)
    return out


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
                        "(final weights) or any rule present in metrics.csv; rules that use target labels "
                        "(oracle-target-val: the published MaskGen code's selection on target-val cases) are "
                        "labelled ORACLE. Other rules found get main_<rule> tables (oracles also fewshot_<rule>, "
                        "with the --paper rows).")
    p.add_argument("--paper", nargs="?", const=True, default=None, metavar="CSV",
                   help="add the published MaskGen row and the difference to the main table "
                        f"(default file: {default_paper_file()})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples of target cases for CIs (default 1000; 0 = off)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--versus", default=REF_METHOD, metavar="METHOD",
                   help=f"method the others are tested against in pairwise.csv (default {REF_METHOD}; "
                        f"e.g. erm to test baselines against the plain recipe)")
    p.add_argument("--sweep", type=Path, action="append", default=None, metavar="FILE",
                   help="the sweep file that declared the runs (repeatable: e.g. sweeps/paper.yaml and "
                        "sweeps/fewshot.yaml): their grid is the expected one (a declared run "
                        "without a finished folder is listed as missing or not averaged; a folder it does not "
                        "declare is left out, with a note). Default: the grid of the folders found")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG/PDF figures")
    p.set_defaults(func=_cmd_tables)


def _cmd_tables(args: argparse.Namespace) -> int:
    if not (Path(args.results) / "runs").is_dir():
        print(f"no run folders under {Path(args.results) / 'runs'}")
        return 1
    written = write_tables(args.results, args.out, selection=args.selection, paper=args.paper,
                           n_boot=args.bootstrap, seed=args.seed, figures=not args.no_figures,
                           versus=args.versus, sweep=args.sweep)
    out = Path(args.out) if args.out is not None else Path(args.results) / "tables"
    print((out / "main.md").read_text())
    print(f"wrote {len(written['tables'])} table files and {len(written['figures'])} figure files to {out}")
    return 0
