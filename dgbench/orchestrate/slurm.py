"""Slurm through submitit: one job array per submission; each task is a ``TrainJob``
(submitit Checkpointable), so a preempted or timed-out task is requeued and resumes from
``checkpoints/last.pt``. Submitit is asked nothing private: only sbatch, squeue, sacct and
scancel are called (by submitit)."""
from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from dgbench.orchestrate.executors import _prepare, final_state
from dgbench.orchestrate.jobs import EXECUTOR_FILE, SLURM_ENDED, holder_alive, slurm_job_states
from dgbench.rundir import RunDir
from dgbench.atomic import atomic_write_json, read_json
from dgbench.spec import RunSpec


def _slurm_job_id() -> str | None:
    try:
        import submitit
        return str(submitit.JobEnvironment().job_id)
    except Exception:
        arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{arr}_{task}" if arr and task else os.environ.get("SLURM_JOB_ID")


def _read(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim(rd: RunDir, job_id: str | None) -> None:
    """Record which job works on the run. A requeued task (same job id, maybe another node) takes
    back the lock its killed previous incarnation left: Slurm never runs one job id twice."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    prev, lock = _read(rd.path / EXECUTOR_FILE), _read(rd.lock_file)
    if lock is not None:
        if (prev and job_id and prev.get("job_id") == job_id and prev.get("pid") is not None
                and (lock.get("host"), lock.get("pid")) == (prev.get("host"), prev.get("pid"))
                and (prev.get("host"), prev.get("pid")) != (me["host"], me["pid"])):
            rd.log(f"slurm job {job_id} restarted: taking back the lock of its previous run "
                   f"({prev.get('host')} pid {prev.get('pid')})")
            rd.release_lock()
        elif holder_alive(rd, slurm_job_states([prev["job_id"]]) if prev and prev.get("job_id") else None):
            return                           # someone else holds it; execute says "busy"
    atomic_write_json(rd.path / EXECUTOR_FILE, {"executor": "slurm", "job_id": job_id,
                                                "time": time.time(), **me})


class TrainJob(Checkpointable):
    """What a Slurm task runs: one run, through the same ``execute`` as every executor.

    Checkpointable: on preemption or timeout submitit calls ``checkpoint`` (inherited: resubmit
    self with the same arguments) and requeues the task; the new process resumes from the run's
    last checkpoint (written every ``ckpt_every`` steps)."""

    def __call__(self, spec: dict, results: str) -> str:
        if "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK"):
            os.environ["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
        from dgbench.train import execute
        spec_ = RunSpec.from_dict(spec)
        rd = RunDir.for_run(results, spec_.run_id)
        rd.path.mkdir(parents=True, exist_ok=True)
        _claim(rd, _slurm_job_id())
        return execute(spec_, Path(results), progress=False)


class SlurmExecutor:
    """All runs as one submitit job array on Slurm.

    time is in minutes (keep it > 10: submitit treats every signal as a timeout below that);
    gpus and cpus are per run; sbatch is a dict of extra sbatch options ({"constraint": "a100"});
    setup is a list of shell lines run before the job (module loads, env). folder holds
    submitit's scripts and logs (default <results>/slurm/%j). wait=True blocks until every run
    has ended (timeout_s caps it) and returns their states; otherwise runs are "submitted"."""

    def __init__(self, partition: str | None = None, account: str | None = None,
                 qos: str | None = None, time: int = 1440, gpus: int = 0, cpus: int = 1,
                 mem_gb: float | None = None, array_parallelism: int = 256,
                 sbatch: dict | None = None, setup: list[str] | None = None,
                 max_timeouts: int = 10, name: str = "dgbench", folder: str | None = None,
                 wait: bool = True, poll_s: float = 5.0, timeout_s: float | None = None):
        self.params: dict[str, Any] = {
            "time": int(time), "cpus_per_task": int(cpus), "array_parallelism": int(array_parallelism),
            "job_name": name, "partition": partition, "account": account, "qos": qos,
            "gpus_per_node": int(gpus) or None, "mem": f"{mem_gb}GB" if mem_gb else None,
            "additional_parameters": dict(sbatch or {}), "setup": list(setup or []),
        }
        self.params = {k: v for k, v in self.params.items() if v not in (None, [], {})}
        self.max_timeouts, self.folder = int(max_timeouts), folder
        self.wait, self.poll_s, self.timeout_s = wait, poll_s, timeout_s
        self.jobs: dict[str, Any] = {}       # run_id -> submitit Job, after run()

    def submit(self, specs: list[RunSpec], results: str | Path) -> dict[str, Any]:
        import submitit
        results = Path(results).resolve()
        ex = submitit.SlurmExecutor(folder=self.folder or str(results / "slurm" / "%j"),
                                    max_num_timeout=self.max_timeouts)
        ex.update_parameters(**self.params)
        with ThreadPoolExecutor(16) as pool:    # fsync-bound small writes: overlap them
            list(pool.map(lambda s: _prepare(s, results), specs))
        with ex.batch():
            jobs = [ex.submit(TrainJob(), spec.to_dict(), str(results)) for spec in specs]
        now = time.time()

        def record(spec_job):
            rd = RunDir.for_run(results, spec_job[0].run_id)
            if not rd.lock_file.exists() or not holder_alive(rd):
                atomic_write_json(rd.path / EXECUTOR_FILE, {"executor": "slurm", "submitted": now,
                                                            "job_id": spec_job[1].job_id})
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(record, zip(specs, jobs)))
        self.jobs = {s.run_id: j for s, j in zip(specs, jobs)}
        return self.jobs

    def run(self, specs: list[RunSpec], results: str | Path) -> dict[str, str]:
        if not specs:
            return {}
        jobs = self.submit(specs, results)
        if not self.wait:
            return {rid: "submitted" for rid in jobs}
        return self.wait_for(jobs, results)

    def wait_for(self, jobs: dict[str, Any], results: str | Path) -> dict[str, str]:
        """Poll until every run has a final marker or its job has ended. Never job.result()
        without a result file: without accounting a cancelled job never looks done."""
        left, states = dict(jobs), {}
        deadline = time.time() + self.timeout_s if self.timeout_s else None
        while left:
            squeue = slurm_job_states(j.job_id for j in left.values())
            for rid, job in list(left.items()):
                rd = RunDir.for_run(results, rid)
                st = rd.state()
                if st in ("done", "failed"):
                    states[rid] = st
                elif job.paths.result_pickle.exists():
                    try:
                        states[rid] = "busy" if job.result() == "busy" else final_state(rd)
                    except Exception:
                        states[rid] = final_state(rd)
                elif squeue is not None and squeue.get(str(job.job_id), "GONE") in SLURM_ENDED | {"GONE"}:
                    time.sleep(1.0)          # the result file may trail the job's end
                    if job.paths.result_pickle.exists():
                        continue
                    states[rid] = final_state(rd)
                else:
                    continue
                del left[rid]
            if left and deadline and time.time() > deadline:
                raise TimeoutError(f"{len(left)} Slurm run(s) still going after {self.timeout_s} s: "
                                   + ", ".join(f"{r} (job {j.job_id})" for r, j in left.items()))
            if left:
                time.sleep(self.poll_s)
        return states
