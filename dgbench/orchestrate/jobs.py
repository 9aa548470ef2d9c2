"""Which scheduler job holds a run (``executor.json``) and whether Slurm still runs it. The
scheduler's word is a hint for runs held on another host; the run folder decides the state."""
from __future__ import annotations

import subprocess
from typing import Iterable

from dgbench.rundir import RunDir

EXECUTOR_FILE = "executor.json"
# Slurm job states after which a job no longer runs (a requeued job goes back to PENDING).
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
               "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}


def slurm_job_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{job id: Slurm state} from squeue (finished jobs stay visible for MinJobAge); None when
    squeue cannot be asked. A hint only: the run folder decides."""
    bases = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not bases:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", "%i %T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def slurm_jobs_alive(job_ids: list[str]) -> dict[str, bool] | None:
    """{job id: still running or queued} for rundir.scan; None when squeue cannot be asked."""
    states = slurm_job_states(job_ids)
    if states is None:
        return None
    return {j: states.get(str(j)) is not None and states[str(j)] not in SLURM_ENDED for j in job_ids}


def job_of(rd: RunDir) -> str | None:
    from dgbench.rundir import _job_id
    return _job_id(rd)


def holder_alive(rd: RunDir, squeue: dict[str, str] | None = None) -> bool:
    """Is a process still working on this run? RunDir.holder_alive, told by squeue whether the
    holder's Slurm job (executor.json) still runs when the holder is on another host."""
    job_alive = None
    job = job_of(rd)
    if job and squeue is not None:
        st = squeue.get(job)
        job_alive = st is not None and st not in SLURM_ENDED
    return rd.holder_alive(job_alive=job_alive)
