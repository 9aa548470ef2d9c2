"""Constants, model-selection names and cell formatting shared by the report modules."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from dgbench.selection import ORACLE, SOURCE_VAL


PRIMARY = SOURCE_VAL
DECIMALS = 1                      # Dice x100 shown with one decimal; ranks tie on this
SCALE = 100.0
REF_METHOD = "maskgen"
DASH = "–"
DAGGER = "†"                      # after a value built from a run that did not converge
_MISSING_NOTE = "Dice convention: per run, each foreground class is averaged over the cases whose ground truth contains it, then classes are averaged (a class absent from every case is excluded); cells are mean ± s.d. over seeds, Dice ×100."


ORACLE_NOTE = (f"ORACLE: this rule chose each run's checkpoint with target-domain labels ('{ORACLE}': the best "
               "mean Dice on the target-val cases, as the published MaskGen reference code selects; Diaz et al. "
               "2026, arXiv 2604.02564). The table exists for a like-for-like comparison with published numbers "
               "selected that way, not as a domain-generalization result: the primary table selects on source-val.")


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


def _int_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Counts stay integers in the CSV even next to rows that lack them."""
    for c in df.columns:
        if c.endswith((".n", "not_converged")) or c in ("n_runs", "n_cases"):
            df[c] = df[c].astype("Int64")
    return df


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(s)).strip("_") or "x"


def _rank_rows(scores: np.ndarray) -> np.ndarray:
    """Rank along the last axis (1 = best, ties averaged, NaN last) on the shown precision."""
    from scipy.stats import rankdata
    v = np.round(np.asarray(scores, dtype=float) * SCALE, DECIMALS)
    v = np.where(np.isfinite(v), v, -np.inf)
    return rankdata(-v, method="average", axis=-1)
