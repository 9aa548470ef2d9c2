"""Sweeps and executors: which runs a sweep means, where they run, and what state they are in.

A run's state always comes from its run folder (``dgbench.rundir.scan``), never from a
scheduler's accounting: a sweep can be re-submitted at any time, from anywhere, and it skips done
runs, resumes unfinished ones from their last checkpoint and reports failed ones (re-running them
only when asked). Overlapping submissions never train one run twice: the run's lock decides, and
``dgbench.train.execute`` answers "busy" to the loser.

  sweep.py      the grid: expand, load_sweep, sweep_specs, as_list / as_seeds
  plan.py       plan_runs / format_plan: what a sweep would do with each run
  executors.py  inline and local executors, get_executor, run_specs
  slurm.py      the Slurm executor (submitit job arrays; imported when used)
  jobs.py       executor.json and squeue: which job holds a run and whether it still runs
  status.py     collect_status / format_status (`dgbench status`)

States returned besides the RunDir states: "busy" (another live process holds the run),
"submitted" (Slurm, not waited for) and "interrupted" (the process ended without a final
marker: killed worker, cancelled job, full disk; the next submission resumes it). An "invalid"
run (its spec.json does not hash to its id) is never run: the plan names it and the fix.

The executor writes ``executor.json`` into a run folder ({"executor", "job_id", "host", "pid",
"time"}): which Slurm job holds the run. It lets ``status`` name the job, lets a submission see
that a "running" run's job is gone, and lets a requeued task, restarted on another node, take
back the lock its own previous incarnation left behind (the lock's pid check only works on the
same host). Nothing here imports torch: the command line's `status` and `sweep --dry-run` stay fast.
"""
from __future__ import annotations

from dgbench.orchestrate.executors import (EXECUTORS, EXIT_BUSY, EXIT_FAILED, InlineExecutor, LocalExecutor,
                                           _local_worker, _prepare, executor_class, get_executor,
                                           progress_steps, run_specs, spec_from_file)
from dgbench.orchestrate.jobs import EXECUTOR_FILE, SLURM_ENDED, holder_alive, slurm_job_states
from dgbench.orchestrate.plan import TODO, format_plan, plan_runs
from dgbench.orchestrate.status import collect_status, format_status
from dgbench.orchestrate.sweep import (as_list, as_seeds, expand, load_sweep, sweep_datasets, sweep_methods,
                                       sweep_specs)

__all__ = ["EXECUTORS", "EXIT_BUSY", "EXIT_FAILED", "InlineExecutor", "LocalExecutor", "executor_class",
           "get_executor", "progress_steps", "run_specs", "spec_from_file", "EXECUTOR_FILE", "SLURM_ENDED",
           "holder_alive", "slurm_job_states", "TODO", "format_plan", "plan_runs", "collect_status",
           "format_status", "as_list", "as_seeds", "expand", "load_sweep", "sweep_datasets", "sweep_methods",
           "sweep_specs", "_local_worker", "_prepare"]
_SLURM = ("SlurmExecutor", "TrainJob", "_claim", "_slurm_job_id")


def __getattr__(name: str):
    """The Slurm names import submitit (0.1 s): only when asked for."""
    if name in _SLURM:
        from dgbench.orchestrate import slurm
        return getattr(slurm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
