"""Did a run train long enough? A verdict from its run-folder files alone.

``verdict(train_loss, val_history, total_steps)`` is a pure function of the per-step training
losses (``train_loss.csv``) and the source-validation history (``val_history.csv``). A run is
*converged* when all four rules hold (the numbers are the module constants below):

left_start       the mean training loss over the last 10% of steps (LAST_FRAC) is at most 0.8 x
                 (LEFT_START_RATIO) the mean over the first 5% of steps (FIRST_FRAC).
                 Else: "never left its starting loss (L0 -> L1)".
loss_plateaued   a least-squares line through the per-step losses of the last 20% of steps
                 (TAIL_FRAC); the drop it predicts across that window (slope x (window - 1)
                 steps) is < 10% (MAX_TAIL_SHARE) of the run's whole drop (starting minus
                 final loss, as in left_start), or is smaller than 2 (TAIL_DROP_Z) standard
                 errors of that drop (from the line's residuals): per-step losses of small
                 batches are noisy, and noise must not read as "still falling".
                 Why a share of the whole drop and not of the current level: under the cosine
                 learning-rate schedule the loss keeps sinking while the rate anneals, after
                 the model has stopped improving. On `synth` a 3000-step ERM
                 whose source-val Dice had been flat (+0.001) for its last 600 steps still lost
                 15% of its level in that window, but only 7.6% of its whole drop. "90% of the
                 whole drop made" is also what the embedded budget rule calls a plateau.
                 Else: "training loss still falling (x% of its drop in the last 20% of steps)".
val_plateaued    the source-val Dice did not still rise by >= 0.02 (MAX_VAL_GAIN) over the last
                 20% of steps: the window is the validations at step >= 80% of the total steps
                 (always including the last one). With >= 3 validations in the window the gain
                 is the rise of a least-squares line through them (slope x the window's span in
                 steps), and a gain within 2 (TAIL_DROP_Z) standard errors of that rise is
                 noise, as for the loss: a Dice averaged over a few validation cases moves by a
                 few points between validations, and one low point at the window's start must
                 not read as "still rising" (a 2400-step ERM on `synth` whose Dice went 0.833,
                 0.886, 0.897, 0.878, 0.875 over its last five validations was flagged by the
                 last-minus-first gain of +0.042; its line rises 0.030 +- 0.031). With 2
                 validations the gain is last minus first; with 1, the last validation minus the
                 one before it (no earlier validation: no gain); neither has a noise estimate.
                 Else: "source-val Dice still rising (+x ± s.e. over the last 20%)" (no "± s.e."
                 without a noise estimate).
learned          the best source-val Dice of the run is >= 0.05 (MIN_BEST_DICE).
                 Else: "predicts (almost) only background: best source-val Dice x".

Windows over steps hold ceil(fraction x n) steps, at least 1 (at least 2 for the line), where
n is the number of per-step losses. Dice is on the 0..1 scale here.

Sources (``of_run``, the field "source"):
- "train_loss": ``train_loss.csv`` holds one loss per step, 1..total steps (dgbench.train
  writes it at every checkpoint).
- "val_history": fallback for run folders made before train_loss.csv existed (or resumed from
  such a run, so their train_loss.csv starts late). ``val_history.csv`` has only the mean loss
  since the previous validation; each interval's mean stands for every step of the interval and
  the same rules are applied. The first 5% of steps then read as the first interval's mean,
  lower than the true starting loss, so left_start is judged more strictly, and the tail line
  is fitted to a staircase.
- "none": neither file. ``converged`` is None (unknown) and the reason says so; readers treat
  it like a run that did not converge, never like one that did.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

FIRST_FRAC = 0.05          # "starting loss": mean over the first 5% of steps
LAST_FRAC = 0.10           # "final loss": mean over the last 10% of steps
LEFT_START_RATIO = 0.8     # final <= 0.8 x starting loss
TAIL_FRAC = 0.20           # the last 20% of steps (loss line; validations at step >= 80%)
MAX_TAIL_SHARE = 0.10      # the tail line's drop must stay below 10% of the run's whole drop ...
TAIL_DROP_Z = 2.0          # ... or within 2 standard errors of the line's slope (noise)
MAX_VAL_GAIN = 0.02        # source-val Dice may rise by less than 0.02 over the tail
MIN_BEST_DICE = 0.05       # below this best source-val Dice the model predicts ~background only
# Version of the rules above, stored with every verdict. Bump it whenever a rule or threshold
# changes: readers recompute a recorded verdict of another version from the run's files
# (dgbench.report), so no table shows a verdict made by rules that no longer hold.
RULES = 3

UNKNOWN_REASON = "convergence unknown: no train_loss.csv or val_history.csv in the run folder"


def _window(n: int, frac: float, least: int = 1) -> int:
    return min(n, max(least, math.ceil(frac * n)))


def _round(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _line_change(x, y) -> tuple[float, float]:
    """(change, standard error) of a least-squares line through the points (x, y) from the first
    x to the last: slope x span. With 2 points the change is exact (s.e. 0); with 1, (0, 0)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return 0.0, 0.0
    slope, icpt = (float(v) for v in np.polyfit(x, y, 1))
    se = 0.0
    if x.size >= 3:
        resid = y - (slope * x + icpt)
        se = math.sqrt(float(resid @ resid) / (x.size - 2) / float(((x - x.mean()) ** 2).sum()))
    span = float(x[-1] - x[0])
    return slope * span, se * span


def start_end(loss) -> tuple[float, float]:
    """(starting, final) loss: the means over the first 5% and the last 10% of the per-step
    losses (the `left_start` rule compares them; benchmarks/loss_curves.py uses them too)."""
    loss = np.asarray(loss, dtype=float)
    n = loss.size
    return float(loss[:_window(n, FIRST_FRAC)].mean()), float(loss[-_window(n, LAST_FRAC):].mean())


def verdict(train_loss: Sequence[float], val_history: Sequence[tuple[int, float]], total_steps: int) -> dict:
    """The convergence verdict (rules in the module docstring).

    ``train_loss``: the loss of every step, in order (step 1 first); ``val_history``:
    (step, source-val mean Dice) per validation; ``total_steps``: the run's planned steps.
    Returns the four rule flags, ``converged`` (all four), ``reasons`` (one string per failed
    rule), ``rules`` (RULES) and the numbers behind them: initial_loss, final_loss, loss_tail_drop (the tail
    line's drop as a share of the whole drop initial_loss - final_loss), loss_tail_drop_se,
    val_tail_gain, val_tail_gain_se, best_val_dice (None where undefined)."""
    loss = np.asarray(list(train_loss), dtype=float)
    val = sorted((int(s), float(d)) for s, d in val_history)
    if loss.size == 0 or not val:
        raise ValueError("a verdict needs at least one training loss and one validation")
    n = loss.size
    first, last = start_end(loss)
    left_start = last <= LEFT_START_RATIO * first

    tail = loss[-_window(n, TAIL_FRAC, least=2):]
    change, change_se = _line_change(np.arange(tail.size), tail)
    drop, drop_se, whole = -change, change_se, first - last
    # no whole drop to take a share of (left_start fails then): any clear tail drop is "falling"
    tol = 1e-6 * max(1.0, abs(first))       # below this a "drop" is rounding, not learning
    dropped = whole > tol
    rel_drop = drop / whole if dropped else (math.inf if drop > tol else 0.0)
    rel_se = drop_se / whole if dropped else math.nan
    # falling = a drop both large (>= 10% of the whole) and distinguishable from the noise (>= 2 s.e.)
    loss_plateaued = not (rel_drop >= MAX_TAIL_SHARE and drop >= TAIL_DROP_Z * drop_se)

    window = [(s, d) for s, d in val if s >= (1 - TAIL_FRAC) * total_steps] or [val[-1]]   # the last: always
    gain_se = math.nan
    if len(window) >= 3:
        gain, gain_se = _line_change([s for s, _ in window], [d for _, d in window])
    elif len(window) == 2:
        gain = window[-1][1] - window[0][1]
    elif len(val) >= 2:
        gain = val[-1][1] - val[-2][1]
    else:
        gain = math.nan
    rising = gain >= MAX_VAL_GAIN and (math.isnan(gain_se) or gain >= TAIL_DROP_Z * gain_se)
    val_plateaued = not rising
    best = max(d for _, d in val)
    learned = best >= MIN_BEST_DICE

    reasons = []
    if not left_start:
        reasons.append(f"never left its starting loss ({first:.2f} -> {last:.2f})")
    if not loss_plateaued:
        reasons.append(f"training loss still falling ({100 * rel_drop:.1f}% of its drop in the last 20% of steps)")
    if not val_plateaued:
        pm = f" ± {gain_se:.3f}" if math.isfinite(gain_se) else ""
        reasons.append(f"source-val Dice still rising ({gain:+.3f}{pm} over the last 20%)")
    if not learned:
        reasons.append(f"predicts (almost) only background: best source-val Dice {best:.3f}")
    return {"rules": RULES, "converged": not reasons, "left_start": left_start, "loss_plateaued": loss_plateaued,
            "val_plateaued": val_plateaued, "learned": learned, "reasons": reasons,
            "initial_loss": _round(first), "final_loss": _round(last), "loss_tail_drop": _round(rel_drop),
            "loss_tail_drop_se": _round(rel_se),
            "val_tail_gain": _round(gain), "val_tail_gain_se": _round(gain_se), "best_val_dice": _round(best),
            "steps": int(n),
            "total_steps": int(total_steps)}


# ------------------------------------------------------------------------------------------
# from the run folder
# ------------------------------------------------------------------------------------------
def read_train_loss(path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a train_loss.csv; [] when there is none."""
    try:
        with open(path, newline="") as f:
            return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def read_val_history(path: Path) -> list[tuple[int, float, float]]:
    """(step, interval-mean loss, source-val Dice) rows of a val_history.csv; [] when there is none."""
    try:
        with open(path, newline="") as f:
            return [(int(r["step"]), float(r["loss"]), float(r["val_dice"])) for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def of_run(path: Path, total_steps: int | None = None) -> dict:
    """The verdict for the run folder ``path`` (see "Sources" in the module docstring), with
    "source" added. ``total_steps``: the run's planned steps (default: the last step recorded)."""
    from dgbench.rundir import RunDir
    rd = RunDir(Path(path))
    losses, hist = read_train_loss(rd.train_loss), read_val_history(rd.val_history)
    if not hist:
        return {"rules": RULES, "converged": None, "reasons": [UNKNOWN_REASON], "source": "none"}
    total = int(total_steps or max(losses[-1][0] if losses else 0, hist[-1][0]))
    val = [(s, d) for s, _, d in hist]
    if losses and [s for s, _ in losses] == list(range(1, total + 1)):
        return {**verdict([v for _, v in losses], val, total), "source": "train_loss"}
    per_step, prev = [], 0
    for step, loss, _ in hist:                      # each interval's mean stands for its steps
        per_step += [loss] * max(0, step - prev)
        prev = max(prev, step)
    return {**verdict(per_step, val, total), "source": "val_history"}


def describe(v: dict) -> str:
    """One line for a log: 'converged (...)' or 'NOT converged: reason; reason'."""
    if v.get("converged") is None:
        return "; ".join(v.get("reasons", [])) or "convergence unknown"
    if v["converged"]:
        return (f"converged (loss {v['initial_loss']:.3f} -> {v['final_loss']:.3f}, "
                f"best source-val Dice {v['best_val_dice']:.3f}; from {v.get('source', '?')})")
    return f"NOT converged ({v.get('source', '?')}): " + "; ".join(v["reasons"])
