"""What a sweep would do with each of its runs, decided from the run folders (rundir.scan)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from dgbench.orchestrate.jobs import slurm_jobs_alive
from dgbench.rundir import scan
from dgbench.spec import RunSpec

TODO = ("run", "resume", "retry")        # plan actions that run something
ACTIONS = ("run", "resume", "retry", "running", "done", "failed", "invalid")


def plan_runs(specs: Iterable[RunSpec], results: str | Path, retry_failed: bool = False,
              now: float | None = None) -> list[tuple[RunSpec, str, str]]:
    """(spec, action, detail) per run. Actions: "run" (nothing yet), "resume" (a checkpoint
    exists), "retry" (failed, retry_failed), "done", "failed", "running", "invalid" (skipped;
    detail: why and how to recover)."""
    specs = list(specs)
    plan = []
    for spec, r in zip(specs, scan(results, [s.run_id for s in specs], now=now, jobs_alive=slurm_jobs_alive)):
        hb = r.heartbeat or {}
        if spec.provisional:
            plan.append((spec, "run", f"its id needs the split `dgbench prepare {spec.dataset}` derives"))
        elif r.state in ("invalid", "done"):
            plan.append((spec, r.state, r.error or ""))
        elif r.state == "failed":
            plan.append((spec, "retry" if retry_failed else "failed", r.error or ""))
        elif r.state == "running":
            plan.append((spec, "running", f"step {hb.get('step', '?')} on {hb.get('host', '?')}"))
        elif r.checkpoint:
            plan.append((spec, "resume", f"last heartbeat at step {hb.get('step', '?')}"))
        else:
            plan.append((spec, "run", ""))
    return plan


def format_plan(plan: list[tuple[RunSpec, str, str]], verbose: bool = True) -> str:
    counts = {a: sum(1 for _, act, _ in plan if act == a) for a in ACTIONS}
    lines = [f"{len(plan)} runs: " + ", ".join(f"{n} {a}" for a, n in counts.items() if n)]
    if verbose:
        width = max((len(s.shown_id) for s, _, _ in plan), default=6)
        for spec, action, detail in plan:
            lines.append(f"  {action:<8} {spec.shown_id:<{width}}  {detail}".rstrip())
    else:
        for spec, action, detail in plan:
            if action == "failed":
                lines.append(f"  failed   {spec.run_id}  {detail}  (re-run with --retry-failed)")
            elif action == "invalid":
                lines.append(f"  invalid  {spec.run_id}  {detail}")
    return "\n".join(lines)
