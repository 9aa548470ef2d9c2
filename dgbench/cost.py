"""What a sweep costs before it is committed: training steps and estimated GPU-hours.

The step times come from a table of measurements (`dgbench/costs.yaml`, or the file given by
`--cost-table` / $DGBENCH_COST_TABLE, which replaces it). A run uses the row that matches its crop,
batch size, network and precision exactly, compiled or eager as the run will train; a run
without such a row is counted as unmeasured, never extrapolated. The estimate covers training
steps only: a data loader that cannot keep up, validation and test inference come on top.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dgbench.errors import UserError
from dgbench.spec import RunSpec

DEFAULT_TABLE = Path(__file__).resolve().with_name("costs.yaml")
COST_ENV = "DGBENCH_COST_TABLE"
NO_ROW = "no row for this crop, batch, network and precision"
EXTRACTOR_LABEL = " + frozen extractor"
ROW_KEYS = {"patch", "batch", "backbone", "backbone_kwargs", "amp", "eager_ms", "compiled_ms", "source"}


def table_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get(COST_ENV) or DEFAULT_TABLE)


def load_table(path: str | Path | None = None) -> dict:
    """The cost table (see costs.yaml for its form), checked; UserError naming the file otherwise."""
    path = table_path(path)
    try:
        table = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"cost table {path} not found (--cost-table or ${COST_ENV})") from None
    except yaml.YAMLError as e:
        raise UserError(f"cost table {path}: not valid YAML ({e})") from None
    rows = table.get("rows") if isinstance(table, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"cost table {path}: expected a mapping with a list `rows` (see {DEFAULT_TABLE})")
    for i, row in enumerate(rows):
        missing = {"patch", "batch", "backbone", "backbone_kwargs", "amp", "source"} - set(row or {})
        unknown = set(row or {}) - ROW_KEYS
        times = [k for k in ("eager_ms", "compiled_ms") if k in (row or {})]
        if missing or unknown or not times:
            raise UserError(f"cost table {path}: row {i + 1} " + "; ".join(
                ([f"lacks {sorted(missing)}"] if missing else []) + ([f"has unknown keys {sorted(unknown)}"] if unknown else [])
                + ([] if times else ["has neither eager_ms nor compiled_ms"])))
        if len(row["patch"]) != 3:
            raise UserError(f"cost table {path}: row {i + 1}: patch must have three sides, got {row['patch']}")
    return {"path": str(path), "gpu": table.get("gpu", "?"), "rows": rows,
            "extractor_overhead": table.get("extractor_overhead") or {}}


def step_mode(spec: RunSpec) -> str:
    """How the run trains on a GPU: "compiled" (train.compile auto or on) or "eager"."""
    return "compiled" if getattr(spec.train, "compile", "off") in ("auto", "on") else "eager"


def _amp(spec: RunSpec) -> str:
    return "bf16" if spec.train.amp in ("auto", "bf16") else spec.train.amp


def crop(patch) -> str:
    return "x".join(str(int(s)) for s in patch)


@dataclass
class Group:
    """Runs that share one step time."""
    label: str                    # crop, batch, mode (and network, precision when not the paper's)
    ms: float | None              # per step; None = unmeasured
    notes: tuple = ()             # where each number comes from; or why there is none
    runs: int = 0
    steps: int = 0
    datasets: set = field(default_factory=set)

    @property
    def gpu_hours(self) -> float:
        return (self.ms or 0.0) * self.steps / 3.6e6


def step_time(spec: RunSpec, table: dict) -> tuple[str, float | None, tuple]:
    """(label, milliseconds per step or None, the sources of its numbers or why there is none)."""
    mode, feat = step_mode(spec), "extractor" in spec.hparams
    t = spec.train
    label = f"{crop(t.patch_size)} batch {t.batch_size} {mode}"
    if t.backbone != "unet" or dict(t.backbone_kwargs) != {"width": 20, "levels": 5} or _amp(spec) != "bf16":
        label += f" ({' '.join([t.backbone, *(f'{k} {v}' for k, v in t.backbone_kwargs.items())])}, {_amp(spec)})"
    label += EXTRACTOR_LABEL if feat else ""
    for row in table["rows"]:
        if (list(map(int, row["patch"])) == list(t.patch_size) and int(row["batch"]) == t.batch_size
                and row["backbone"] == t.backbone and dict(row["backbone_kwargs"]) == dict(t.backbone_kwargs)
                and row["amp"] == _amp(spec)):
            ms = row.get(f"{mode}_ms")
            if ms is None:
                return label, None, (f"the matching row has no {mode} time",)
            notes = (f"{crop(t.patch_size)} batch {t.batch_size} {mode} {ms} ms: {row['source']}",)
            if feat:
                over = table["extractor_overhead"].get(mode)
                if over is None:
                    return label, None, (f"no {mode} frozen-extractor overhead was measured",)
                ms = ms * (1 + float(over))
                notes += (f"frozen extractor +{float(over):.0%} {mode}: "
                          f"{table['extractor_overhead'].get('source', '?')}",)
            return label, float(ms), notes
    return label, None, (NO_ROW,)


@dataclass
class Estimate:
    table: dict
    grid_runs: int
    grid_steps: int
    groups: dict[str, Group]

    @property
    def measured(self) -> list[Group]:
        return [g for g in self.groups.values() if g.ms is not None]

    @property
    def unmeasured(self) -> list[Group]:
        return [g for g in self.groups.values() if g.ms is None]

    @property
    def gpu_hours(self) -> float:
        return sum(g.gpu_hours for g in self.measured)

    def format(self) -> str:
        runs = sum(g.runs for g in self.groups.values())
        steps = sum(g.steps for g in self.groups.values())
        m_runs = sum(g.runs for g in self.measured)
        lines = [f"cost (step times: {self.table['path']}, {self.table['gpu']}; one GPU per run):",
                 f"  grid: {self.grid_runs:,} runs, {self.grid_steps:,} training steps; "
                 f"to run: {runs:,} runs, {steps:,} steps"]
        for g in sorted(self.measured, key=lambda g: g.label):
            lines.append(f"  {g.label}, {g.ms:.1f} ms/step: {g.runs} runs ({', '.join(sorted(g.datasets))}), "
                         f"{g.steps:,} steps = {g.gpu_hours:,.1f} GPU-h")
        if runs:
            lines.append(f"  estimated: {self.gpu_hours:,.1f} GPU-h for {m_runs} of the {runs} runs to run "
                         f"(training steps only: a data loader that cannot keep up, validation and test "
                         f"inference come on top)")
        if self.unmeasured:
            lines.append(f"  not in the estimate, no measured step time: {sum(g.runs for g in self.unmeasured)} runs, "
                         f"{sum(g.steps for g in self.unmeasured):,} steps")
            by_reason: dict[str, list[Group]] = {}
            for g in self.unmeasured:
                by_reason.setdefault(g.notes[0], []).append(g)
            for reason, groups in sorted(by_reason.items()):
                merged: dict[str, list] = {}        # a missing row is missing with or without extractor
                for g in groups:
                    key = g.label.removesuffix(EXTRACTOR_LABEL) if reason == NO_ROW else g.label
                    m = merged.setdefault(key, [set(), 0])
                    m[0] |= g.datasets
                    m[1] += g.runs
                lines.append(f"    {reason}: " + "; ".join(
                    f"{k} ({', '.join(sorted(d))}, {n} runs)" for k, (d, n) in sorted(merged.items())))
            lines.append(f"    to estimate those, measure a training step of that configuration on your GPU and add a "
                         f"row to a copy of {DEFAULT_TABLE} (--cost-table FILE or ${COST_ENV})")
        sources = sorted({n for g in self.measured for n in g.notes})
        lines += [f"  source: {s}" for s in sources]
        return "\n".join(lines)


def estimate(grid: list[RunSpec], todo: list[tuple[RunSpec, int]], table: dict) -> Estimate:
    """`grid`: every run of the sweep; `todo`: (run, steps it has left) for those that would run."""
    groups: dict[str, Group] = {}
    for spec, left in todo:
        label, ms, notes = step_time(spec, table)
        g = groups.setdefault(label, Group(label, ms, notes))
        g.runs += 1
        g.steps += int(left)
        g.datasets.add(spec.dataset)
    return Estimate(table, len(grid), sum(s.train.steps for s in grid), groups)
