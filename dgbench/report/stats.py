"""Statistics: bootstrap CIs, rank-then-aggregate, paired tests, and their tables."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from dgbench.report.common import DAGGER, DASH, REF_METHOD, SCALE, Table, _col_label_main, _int_columns, _rank_rows
from dgbench.selection import rule
from dgbench.report.collect import Collection, _convergence_notes, not_converged

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
    notes = [f"Selection: {rule(selection).title}.",
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
