"""Checkpoint selection rules: the validation history and the final evaluation of a run.

Every run's weights are evaluated under each rule, and metrics.csv says which (``selection``):

- ``last``: the final weights (no selection).
- ``source-val``: the weights with the best score on the held-out source cases (the split's
  ``val``); the primary rule. Kept as ``checkpoints/best.pt``.
- ``oracle-target-val``: the weights with the best score on the target-domain validation cases
  (the split's ``target_val``, all target domains pooled). An ORACLE: it uses target labels. It
  exists because the published MaskGen reference code selects its checkpoint this way (Diaz et
  al. 2026, arXiv 2604.02564), so its rows give the like-for-like comparison with the published
  numbers, in tables labelled as oracles only; it never influences training or the other rules.
  Kept as ``checkpoints/oracle_target_val.pt``. A split without target-val cases has neither
  that checkpoint nor such rows.

The report sees each rule as a ``Rule`` (``rule(name)``): its name, how tables label it, whether
it is an oracle, and its fallback. One fallback policy: only ``source-val`` has one (``last``),
for run folders from before source-val rows existed; it is never taken silently: ``dgbench
tables`` falls back only when no run at all has source-val rows (a note tops every table), and
the bench table falls back per run and names those runs in its header. Otherwise a done run
without the rule's rows is not averaged and is named under the table.

The score is the same for both validations: ``dgbench.evaluate.mean_dice`` (each class averaged
over the cases that contain it, then over classes) of the rows of ``evaluate_cases``, with the
run's sliding-window settings (``train.sw_overlap``, ``train.sw_batch_size``), at every
validation point (``train.val_every`` and the last step). Ties keep the earlier step.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgbench.atomic import atomic_write_bytes, atomic_write_text
from dgbench.rundir import METRIC_COLUMNS, RunDir

LAST, SOURCE_VAL, ORACLE = "last", "source-val", "oracle-target-val"


@dataclass(frozen=True)
class Rule:
    """A checkpoint selection rule as tables show it (see the module docstring)."""
    name: str                       # the ``selection`` value in metrics.csv
    label: str = ""                 # what tables say it is
    oracle: bool = False            # looks at target labels: tables labelled ORACLE only
    fallback: str | None = None     # the rule a run without this one's rows may use, named

    @property
    def title(self) -> str:
        if self.oracle:
            return f"{self.name} — ORACLE (uses target labels)"
        return f"{self.name} ({self.label})" if self.label else self.name

    def choose(self, have: set) -> str | None:
        """The rule to use for a run whose metrics.csv has the rules ``have``: this one, else its
        fallback, else None (the run is not tabulated)."""
        return self.name if self.name in have else self.fallback if self.fallback in have else None


RULES = {r.name: r for r in (
    Rule(SOURCE_VAL, "best checkpoint on held-out source validation; primary", fallback=LAST),
    Rule(LAST, "final checkpoint, no selection"),
    Rule(ORACLE, oracle=True))}


def rule(name: str) -> Rule:
    """The rule ``name``; one found only in metrics.csv is plain, and an oracle when its name says
    it looks at target labels ("target" or "oracle")."""
    return RULES.get(name) or Rule(name, oracle="target" in name.lower() or "oracle" in name.lower())


VAL_COLUMNS = ["step", "loss", "val_dice"]
TARGET_VAL_COLUMN = "target_val_dice"     # val_history.csv: only for splits with target-val cases


def append_val_history(path: Path, step: int, loss: float, val: float, target_val: float | None) -> None:
    """Add one validation to val_history.csv: step, loss, val_dice, and target_val_dice when the
    split has target-val cases (``target_val`` not None). Rows at or past ``step`` are dropped
    first: they came from a process killed after its last checkpoint."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < step]
    row = {"step": step, "loss": f"{loss:.6f}", "val_dice": f"{val:.6f}"}
    if target_val is not None:
        row[TARGET_VAL_COLUMN] = f"{target_val:.6f}"
    rows.append(row)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=VAL_COLUMNS + ([TARGET_VAL_COLUMN] if target_val is not None else []))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, out.getvalue())


def final_metrics(trainer) -> list[dict]:
    """Metric rows of every selection rule on the source-val, target test and target-val cases.

    The weights of a step are evaluated once: a rule whose step is the last step, or the step of
    a rule already evaluated, reuses those rows. A rule that never scored (no finite score) uses
    the last weights. Predictions (``predictions/*.npz``, one test case per target domain) come
    from the source-val weights."""
    t, split = trainer, trainer.split
    cases = [("val", c) for c in split.val]
    cases += [("test", c) for ids in split.test.values() for c in ids]
    cases += t.target_val_cases
    keep = {ids[0] for ids in split.test.values() if ids}
    rows, preds = t.evaluate(cases, keep_predictions=keep, progress=t.progress, desc=f"evaluate {LAST}")
    by_step = {t.step: rows}
    out = [dict(r, selection=LAST) for r in rows]
    rules = [(SOURCE_VAL, t.best_step, t.rd.best_ckpt, keep)]
    if t.target_val_cases:
        rules.append((ORACLE, t.best_tv_step, t.rd.oracle_ckpt, None))
    for name, step, path, kept in rules:
        step = t.step if step == -1 else step
        if step not in by_step:
            t.net.load_state_dict(t.read_checkpoint(path)["model"])
            by_step[step], p = t.evaluate(cases, keep_predictions=kept, progress=t.progress,
                                          desc=f"evaluate {name}")
            preds = p if kept else preds
        out += [dict(r, selection=name) for r in by_step[step]]
    for case_id, (image, label, pred) in preds.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, image=image, label=label, pred=pred)
        atomic_write_bytes(t.rd.path / "predictions" / f"{case_id}.npz", buf.getvalue())
    s = t.spec
    return [{"run_id": s.run_id, "dataset": s.dataset, "method": s.method, "setting": s.setting,
             "seed": s.seed, **r} for r in out]


def write_metrics(rd: RunDir, rows: list[dict]) -> None:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=METRIC_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6f}" if k == "dice" and not math.isnan(r[k]) else r[k]) for k in METRIC_COLUMNS})
    atomic_write_text(rd.metrics_file, out.getvalue())
