"""Sweeps and executors: which runs a sweep means, where they run, and what state they are in.

A run's state always comes from its run folder (``RunDir.state``), never from a scheduler's
accounting: a sweep can be re-submitted at any time, from anywhere, and it skips done runs,
resumes unfinished ones from their last checkpoint and reports failed ones (re-running them only
when asked). Overlapping submissions never train one run twice: the run's lock decides, and
``dgbench.train.execute`` answers "busy" to the loser.

Executors share one interface, ``.run(specs, results) -> {run_id: state}``:
  inline   in this process, one run after another (tests, ``make bench``)
  local    a pool of N worker processes (spawn), each pinned to one GPU when GPUs are listed
  slurm    one submitit job array (``cluster="slurm"``, never auto-detected); each task is a
           ``TrainJob`` (submitit Checkpointable), so a preempted or timed-out task is requeued
           and resumes from ``checkpoints/last.pt``

States returned besides the RunDir states: "busy" (another live process holds the run),
"submitted" (Slurm, not waited for) and "interrupted" (the process ended without a final
marker: killed worker, cancelled job, full disk; the next submission resumes it). An "invalid"
run (its spec.json does not hash to its id) is never run: the plan names it and the fix.

The executor writes ``executor.json`` into a run folder ({"executor", "job_id", "host", "pid",
"time"}): which Slurm job holds the run. It lets ``status`` name the job, lets a submission see
that a "running" run's job is gone, and lets a requeued task, restarted on another node, take
back the lock its own previous incarnation left behind (the lock's pid check only works on the
same host).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import yaml

from dgbench import __version__
from dgbench.rundir import RUN_ID_RE, RunDir, STATES, atomic_write_json, read_json, to_json
from dgbench.spec import RunSpec, parse_value

EXECUTORS = ("inline", "local", "slurm")
EXECUTOR_FILE = "executor.json"
SWEEP_KEYS = {"datasets", "methods", "settings", "seeds", "hparams", "train", "results",
              "executor", "grids", "local", "slurm", "retry_failed"}
GRID_KEYS = {"datasets", "methods", "settings", "seeds", "hparams", "train"}
# Slurm job states after which a job no longer runs (a requeued job goes back to PENDING).
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
               "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}
EXIT_FAILED, EXIT_BUSY = 10, 11          # local worker exit codes
TODO = ("run", "resume", "retry")        # plan actions that run something


# ---------------------------------------------------------------------------------------------
# sweep expansion
# ---------------------------------------------------------------------------------------------
def as_list(value: Any) -> list[str]:
    """'a,b' / ['a', 'b'] / 'a' -> ['a', 'b'] / ['a', 'b'] / ['a']."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def as_seeds(value: Any) -> list[int]:
    """'0,1,2', '0-2' or [0, '1-2'] -> [0, 1, 2]; a bare int is one seed."""
    if isinstance(value, int):
        return [value]
    seeds: list[int] = []
    for item in as_list(value):
        lo, sep, hi = item.partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if sep and lo else [int(item)])
    return seeds


def expand(datasets: Iterable[str], methods: Iterable[str], settings: Iterable[str] = ("full",),
           seeds: Iterable[int] = (0,), hparams: dict | None = None,
           train: dict | None = None) -> list[RunSpec]:
    """The grid datasets x methods x settings x seeds, resolved, without duplicates.

    ``hparams`` maps a method name to its hyperparameter overrides; ``train`` overrides the
    training recipe of every run. Needs no data on disk."""
    from dgbench.spec import resolve
    hparams = hparams or {}
    unknown = set(hparams) - set(methods)
    if unknown:
        raise ValueError(f"hparams given for method(s) not in the sweep: {sorted(unknown)}")
    specs: dict[str, RunSpec] = {}
    for d, m, st, sd in itertools.product(list(datasets), list(methods), list(settings), list(seeds)):
        spec = resolve(d, m, seed=int(sd), setting=st, hparams=dict(hparams.get(m) or {}),
                       train=dict(train or {}))
        specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def load_sweep(path: str | Path) -> dict:
    """Read a sweep file (YAML). Keys: datasets, methods, settings, seeds, hparams (per method),
    train, results, executor, local / slurm (executor options), retry_failed, and optionally
    grids: a list of sub-grids, each taking the top-level keys as defaults."""
    path = Path(path)
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a sweep file is a mapping, got {type(cfg).__name__}")
    unknown = set(cfg) - SWEEP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(SWEEP_KEYS)}")
    for grid in cfg.get("grids") or []:
        bad = set(grid) - GRID_KEYS
        if bad:
            raise ValueError(f"{path}: unknown grid key(s) {sorted(bad)}; known: {sorted(GRID_KEYS)}")
    return cfg


def sweep_datasets(cfg: dict) -> list[str]:
    """Every dataset a sweep config names (top level and grids), in order."""
    grids = cfg.get("grids") or [{}]
    return list(dict.fromkeys(d for grid in grids for d in as_list(grid.get("datasets", cfg.get("datasets")))))


def sweep_specs(cfg: dict, skip: Iterable[str] = ()) -> list[RunSpec]:
    """The runs a sweep config means (see load_sweep), in order, without duplicates. Datasets in
    ``skip`` are left out (the preflight has already reported why they cannot be specified)."""
    skip = set(skip)
    grids = cfg.get("grids") or [{}]
    grid_methods = [as_list(grid.get("methods", cfg.get("methods"))) for grid in grids]
    swept = set().union(*grid_methods)
    stray = sorted(set(cfg.get("hparams") or {}) - swept)
    for grid, methods in zip(grids, grid_methods):
        stray += sorted(set(grid.get("hparams") or {}) - set(methods))
    if stray:
        raise ValueError(f"hyperparameters given for method(s) {sorted(set(stray))} that the sweep (or the grid "
                         f"they are given in) does not run "
                         f"(methods: {', '.join(sorted(swept)) or 'none'}); check the spelling of METHOD in "
                         f"--hparam METHOD.NAME=VALUE or the sweep file's hparams")
    specs: dict[str, RunSpec] = {}
    for grid in grids:
        g = {k: cfg.get(k) for k in GRID_KEYS}
        g.update({k: v for k, v in grid.items() if k not in ("train", "hparams")})
        g["train"] = {**(cfg.get("train") or {}), **(grid.get("train") or {})}
        hp = {m: dict(v or {}) for m, v in (cfg.get("hparams") or {}).items()}
        for m, v in (grid.get("hparams") or {}).items():
            hp[m] = {**hp.get(m, {}), **(v or {})}
        methods = as_list(g["methods"])
        if not as_list(g["datasets"]) or not methods:
            raise ValueError("a sweep needs datasets and methods")
        datasets = [d for d in as_list(g["datasets"]) if d not in skip]
        for spec in expand(datasets, methods, as_list(g["settings"]) or ["full"],
                           as_seeds(g["seeds"] if g["seeds"] is not None else 0),
                           {m: v for m, v in hp.items() if m in methods}, g["train"]):
            specs.setdefault(spec.run_id, spec)
    return list(specs.values())


# ---------------------------------------------------------------------------------------------
# state of runs, from their folders
# ---------------------------------------------------------------------------------------------
def _read(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


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


def holder_alive(rd: RunDir, squeue: dict[str, str] | None = None) -> bool:
    """Is a process still working on this run? RunDir.holder_alive, told by squeue whether the
    holder's Slurm job (executor.json) still runs when the holder is on another host."""
    job_alive = None
    job = (_read(rd.path / EXECUTOR_FILE) or {}).get("job_id")
    if job and squeue is not None:
        st = squeue.get(str(job))
        job_alive = st is not None and st not in SLURM_ENDED
    return rd.holder_alive(job_alive=job_alive)


def plan_runs(specs: Iterable[RunSpec], results: str | Path, retry_failed: bool = False,
              now: float | None = None) -> list[tuple[RunSpec, str, str]]:
    """(spec, action, detail) per run. Actions: "run" (nothing yet), "resume" (a checkpoint
    exists), "retry" (failed, retry_failed), "done", "failed", "running", "invalid" (skipped;
    detail: why and how to recover)."""
    specs = list(specs)
    rds = [RunDir.for_run(results, s.run_id) for s in specs]
    states = [rd.state(now=now) for rd in rds]
    remote = [rd for rd, st in zip(rds, states) if st == "running"]
    jobs = [(_read(rd.path / EXECUTOR_FILE) or {}).get("job_id") for rd in remote]
    squeue = slurm_job_states(jobs) if any(jobs) else None
    plan = []
    for spec, rd, st in zip(specs, rds, states):
        hb = rd.heartbeat() or {}
        if st == "invalid":
            plan.append((spec, "invalid", rd.spec_problem() or ""))
        elif st == "done":
            plan.append((spec, "done", ""))
        elif st == "failed" and not retry_failed:
            plan.append((spec, "failed", rd.last_error() or ""))
        elif st == "running" and holder_alive(rd, squeue):
            plan.append((spec, "running", f"step {hb.get('step', '?')} on {hb.get('host', '?')}"))
        elif st == "failed":
            plan.append((spec, "retry", rd.last_error() or ""))
        elif rd.last_ckpt.exists():
            plan.append((spec, "resume", f"last heartbeat at step {hb.get('step', '?')}"))
        else:
            plan.append((spec, "run", ""))
    return plan


def format_plan(plan: list[tuple[RunSpec, str, str]], verbose: bool = True) -> str:
    counts = {a: sum(1 for _, act, _ in plan if act == a)
              for a in ("run", "resume", "retry", "running", "done", "failed", "invalid")}
    head = f"{len(plan)} runs: " + ", ".join(f"{n} {a}" for a, n in counts.items() if n)
    lines = [head]
    if verbose:
        width = max((len(s.run_id) for s, _, _ in plan), default=6)
        for spec, action, detail in plan:
            lines.append(f"  {action:<8} {spec.run_id:<{width}}  {detail}".rstrip())
    else:
        for spec, action, detail in plan:
            if action == "failed":
                lines.append(f"  failed   {spec.run_id}  {detail}  (re-run with --retry-failed)")
            elif action == "invalid":
                lines.append(f"  invalid  {spec.run_id}  {detail}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------------
def _prepare(spec: RunSpec, results: Path) -> RunDir:
    """Create the run folder with its spec.json (the same content dgbench.train.write_spec
    writes) so that `status` lists queued runs as pending."""
    rd = RunDir.for_run(results, spec.run_id)
    if not rd.spec_file.exists():
        atomic_write_json(rd.spec_file, {"run_id": spec.run_id, "spec": spec.to_dict(),
                                         "dgbench": __version__, "torch": _torch_version()})
    return rd


@functools.lru_cache(maxsize=1)
def _torch_version() -> str:
    """torch.__version__ without importing torch (seconds) in the submitting process."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return "?"


def spec_from_file(path: str | Path) -> RunSpec:
    """The RunSpec in a spec.json (as written by dgbench.train: {"spec": ...}, or a bare spec).
    Inside a run folder, the spec must be that folder's (RunDir.read_spec; RunFolderError if not)."""
    path = Path(path)
    if path.name == "spec.json" and path.parent.parent.name == "runs":
        spec = RunDir(path.parent).read_spec()
        if spec is None:
            raise FileNotFoundError(f"{path}: no such file")
        return RunSpec.from_dict(spec)
    data = read_json(path)
    return RunSpec.from_dict(data["spec"] if "spec" in data else data)


def _final_state(rd: RunDir) -> str:
    st = rd.state()
    return st if st in ("done", "failed", "invalid") else "interrupted"


class InlineExecutor:
    """Runs in this process, one after the other."""

    def run(self, specs: list[RunSpec], results: str | Path) -> dict[str, str]:
        from dgbench.train import execute
        return {s.run_id: execute(s, Path(results)) for s in specs}


def _local_worker(spec: dict, results: str, gpu: str | None, threads: int | None) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:                              # before torch is imported: no oversubscription
        os.environ["OMP_NUM_THREADS"] = str(threads)
    from dgbench.train import execute
    state = execute(RunSpec.from_dict(spec), Path(results), progress=False)
    sys.exit({"done": 0, "failed": EXIT_FAILED, "busy": EXIT_BUSY}.get(state, 1))


def _progress_steps(rd: RunDir, spec: RunSpec) -> int:
    """Steps a run has reached, from its files (heartbeat; all of them once done)."""
    if rd.done_file.exists():
        return spec.train.steps
    hb = rd.heartbeat()
    return int(hb.get("step", 0)) if hb else 0


class LocalExecutor:
    """A pool of ``workers`` processes on this machine; one fresh (spawned) process per run, so a
    crashed or killed run never takes the pool down. With ``gpus`` (e.g. "0,1"), worker slot i
    sees only GPU gpus[i % len(gpus)] through CUDA_VISIBLE_DEVICES; workers defaults to one per
    GPU. Each worker gets ``threads`` CPU threads (default: the CPUs shared out, unless
    OMP_NUM_THREADS is set)."""

    def __init__(self, workers: int | None = None, gpus: str | list | None = None,
                 threads: int | None = None, poll_s: float = 1.0):
        self.gpus = as_list(gpus) or None
        self.workers = int(workers or (len(self.gpus) if self.gpus else 1))
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if threads is None and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.threads, self.poll_s = threads, poll_s

    def run(self, specs: list[RunSpec], results: str | Path) -> dict[str, str]:
        import multiprocessing as mp
        from multiprocessing.connection import wait
        ctx = mp.get_context("spawn")
        results = Path(results)
        queue, states = list(specs), {}
        free = list(range(self.workers))
        running: dict[Any, tuple[RunSpec, int]] = {}
        from dgbench.progress import progress

        def steps_done() -> int:
            return sum(_progress_steps(RunDir.for_run(results, s.run_id), s) for s in specs)
        bar = progress(sum(s.train.steps for s in specs), f"{len(specs)} runs, {self.workers} workers", "step",
                       initial=steps_done())      # steps done before this call do not count in the rate
        try:
            while queue or running:
                bar.n = steps_done()
                bar.set_postfix(done=len(states))
                bar.refresh()
                while queue and free:
                    spec, slot = queue.pop(0), free.pop(0)
                    gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
                    _prepare(spec, results)
                    p = ctx.Process(target=_local_worker, args=(spec.to_dict(), str(results), gpu, self.threads),
                                    name=f"dgbench:{spec.run_id}", daemon=False)
                    p.start()
                    running[p] = (spec, slot)
                wait([p.sentinel for p in running], timeout=self.poll_s)
                for p in [p for p in running if not p.is_alive()]:
                    p.join()
                    spec, slot = running.pop(p)
                    free.append(slot)
                    rd = RunDir.for_run(results, spec.run_id)
                    states[spec.run_id] = "busy" if p.exitcode == EXIT_BUSY else _final_state(rd)
            bar.close()
        except BaseException:
            bar.close()
            for p in running:                # leave the runs resumable, never orphaned
                p.terminate()
            for p in running:
                p.join(10)
            raise
        return states


def _slurm_job_id() -> str | None:
    try:
        import submitit
        return str(submitit.JobEnvironment().job_id)
    except Exception:
        arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{arr}_{task}" if arr and task else os.environ.get("SLURM_JOB_ID")


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


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:                          # submitit is a dependency; this keeps imports cheap
    _Checkpointable = object                 # type: ignore[assignment,misc]


class TrainJob(_Checkpointable):
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
                        states[rid] = "busy" if job.result() == "busy" else _final_state(rd)
                    except Exception:
                        states[rid] = _final_state(rd)
                elif squeue is not None and squeue.get(str(job.job_id), "GONE") in SLURM_ENDED | {"GONE"}:
                    time.sleep(1.0)          # the result file may trail the job's end
                    if job.paths.result_pickle.exists():
                        continue
                    states[rid] = _final_state(rd)
                else:
                    continue
                del left[rid]
            if left and deadline and time.time() > deadline:
                raise TimeoutError(f"{len(left)} Slurm run(s) still going after {self.timeout_s} s: "
                                   + ", ".join(f"{r} (job {j.job_id})" for r, j in left.items()))
            if left:
                time.sleep(self.poll_s)
        return states


def get_executor(name: str, **opts: Any):
    """inline | local (workers, gpus) | slurm (see SlurmExecutor)."""
    classes = {"inline": InlineExecutor, "local": LocalExecutor, "slurm": SlurmExecutor}
    if name not in classes:
        raise ValueError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    try:
        return classes[name](**opts)
    except TypeError as e:
        raise ValueError(f"executor {name!r}: {e}") from None


def run_specs(specs: Iterable[RunSpec], results: str | Path, executor: str = "inline",
              retry_failed: bool = False, **opts: Any) -> dict[str, str]:
    """Run what is not done yet; {run_id: state} for every spec given.

    Done runs are skipped, unfinished ones resumed, failed ones reported as "failed" (and
    re-run only with retry_failed), runs that a live process holds reported as "running", run
    folders whose spec.json names another run reported as "invalid" (never run)."""
    plan = plan_runs(_unique(specs), results, retry_failed=retry_failed)
    states = {s.run_id: act for s, act, _ in plan if act in ("done", "failed", "running", "invalid")}
    todo = [s for s, act, _ in plan if act in TODO]
    for spec, act, _ in plan:
        if act == "retry":                   # the old marker goes; its text stays in the log
            rd = RunDir.for_run(results, spec.run_id)
            rd.log(f"retrying after failure: {rd.last_error()}")
            rd.failed_file.unlink(missing_ok=True)
    if todo:
        states.update(get_executor(executor, **opts).run(todo, results))
    return states


def _unique(specs: Iterable[RunSpec]) -> list[RunSpec]:
    return list({s.run_id: s for s in specs}.values())


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------
def collect_status(results: str | Path, now: float | None = None) -> list[dict]:
    """One row per run folder: run_id, state, dataset, method, setting, seed, step, age_s (since
    the last heartbeat), host, job_id, error. Reads a few small files per folder."""
    now = time.time() if now is None else now
    root = Path(results) / "runs"
    rows = []
    try:
        entries = sorted((e for e in os.scandir(root) if e.is_dir()), key=lambda e: e.name)
    except FileNotFoundError:
        return rows
    for e in entries:
        rd = RunDir(Path(e.path))
        state = rd.state(now=now)
        if state == "invalid":               # the spec's labels are not to be trusted: the name's
            m = RUN_ID_RE.match(e.name)
            spec = m.groupdict() if m else {}
        else:
            spec = _read(rd.spec_file) or {}
            spec = spec.get("spec", spec)
        row = {"run_id": e.name, "state": state, "dataset": spec.get("dataset", "?"),
               "method": spec.get("method", "?"), "setting": spec.get("setting", "?"),
               "seed": spec.get("seed", "?"), "step": None, "age_s": None, "host": None,
               "job_id": None, "error": None}
        if state == "failed":
            row["error"] = rd.last_error()
        elif state == "invalid":
            row["error"] = rd.spec_problem()
        elif state in ("running", "stale", "pending"):
            hb = rd.heartbeat() or {}
            row.update(step=hb.get("step"), host=hb.get("host"),
                       age_s=now - float(hb["time"]) if "time" in hb else None)
            row["job_id"] = (_read(rd.path / EXECUTOR_FILE) or {}).get("job_id")
        rows.append(row)
    return rows


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_status(rows: list[dict], results: str | Path = "", show_all: bool = False) -> str:
    counts = {st: sum(r["state"] == st for r in rows) for st in STATES}
    states = [st for st in STATES if st != "invalid" or counts[st]]   # "invalid" only when there are some
    out = [f"{results}: {len(rows)} runs - " + ", ".join(f"{st} {counts[st]}" for st in states)]
    if not rows:
        return out[0]
    groups: dict[tuple, dict[str, int]] = {}
    for r in rows:
        g = groups.setdefault((r["dataset"], r["method"], r["setting"]), dict.fromkeys(STATES, 0))
        g[r["state"]] += 1
    w = [max(len(str(k[i])) for k in groups) for i in range(3)]
    w = [max(w[0], 7), max(w[1], 6), max(w[2], 7)]
    out.append("")
    out.append(f"{'dataset':<{w[0]}}  {'method':<{w[1]}}  {'setting':<{w[2]}}  "
               + "  ".join(f"{st:>7}" for st in states))
    for k in sorted(groups):
        out.append(f"{k[0]:<{w[0]}}  {k[1]:<{w[1]}}  {k[2]:<{w[2]}}  "
                   + "  ".join(f"{groups[k][st] or '.':>7}" for st in states))
    shown = [r for r in rows if show_all or r["state"] in ("invalid", "failed", "stale", "running")
             or (r["state"] == "pending" and r["job_id"])]
    if shown:
        width = max(len(r["run_id"]) for r in shown)
        out.append("")
        order = {st: i for i, st in enumerate(("invalid", "failed", "stale", "running", "pending", "done"))}
        for r in sorted(shown, key=lambda r: (order[r["state"]], r["run_id"])):
            if r["state"] in ("failed", "invalid"):
                detail = r["error"] or "(no error recorded)"
            elif r["state"] in ("running", "stale"):
                detail = (f"step {r['step']}, last heartbeat {_age(r['age_s'])} ago on {r['host']}"
                          + (f", job {r['job_id']}" if r["job_id"] else "")
                          + (f" - {r['error']}" if r["error"] else ""))
            elif r["state"] == "pending":
                detail = f"queued as job {r['job_id']}" if r["job_id"] else ""
            else:
                detail = ""
            out.append(f"  {r['state']:<8} {r['run_id']:<{width}}  {detail}".rstrip())
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def parse_kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), parse_value(value)


def _kv_raw(text: str) -> tuple[str, Any]:
    """KEY=VALUE kept as text (sbatch values such as 1:00:00 are not numbers); KEY= is a flag."""
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value if value else True


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """Executor options, shared by `sweep` and the lead's `bench`."""
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="inline (this process; default), local (process pool), slurm (job array)")
    g.add_argument("--workers", type=int, help="local: worker processes (default: one per GPU, or 1)")
    g.add_argument("--gpus", help="local: GPU ids for the workers, e.g. 0,1,2,3")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--account", help="slurm: account")
    g.add_argument("--qos", help="slurm: quality of service")
    g.add_argument("--time", type=int, help="slurm: time limit per run in minutes (default 1440; keep > 10)")
    g.add_argument("--gpus-per-run", type=int, dest="gpus_per_run", help="slurm: GPUs per run (default 0)")
    g.add_argument("--cpus-per-run", type=int, dest="cpus_per_run", help="slurm: CPUs per run (default 1)")
    g.add_argument("--mem-gb", type=float, dest="mem_gb", help="slurm: memory per run in GB")
    g.add_argument("--array-parallelism", type=int, dest="array_parallelism",
                   help="slurm: at most this many runs at once (default 256)")
    g.add_argument("--sbatch", type=_kv_raw, action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: extra sbatch option, e.g. --sbatch constraint=a100 (repeatable)")
    g.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="slurm: shell line run before each job, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--wait", action="store_true", help="slurm: block until every run has ended")


def executor_options(args: argparse.Namespace, cfg: dict | None = None) -> tuple[str, dict]:
    """(executor name, options) from parsed args over a sweep file's executor settings."""
    cfg = cfg or {}
    name = args.executor or cfg.get("executor") or "inline"
    opts = dict(cfg.get(name) or {}) if name in ("local", "slurm") else {}
    if name == "local":
        cli = {"workers": args.workers, "gpus": args.gpus}
    elif name == "slurm":
        cli = {"partition": args.partition, "account": args.account, "qos": args.qos,
               "time": args.time, "gpus": args.gpus_per_run, "cpus": args.cpus_per_run,
               "mem_gb": args.mem_gb, "array_parallelism": args.array_parallelism}
        if args.sbatch:
            opts["sbatch"] = {**(opts.get("sbatch") or {}), **dict(args.sbatch)}
        if args.setup:
            opts["setup"] = list(opts.get("setup") or []) + list(args.setup)
        opts.setdefault("wait", False)
        if args.wait:
            opts["wait"] = True
    else:
        cli = {}
    opts.update({k: v for k, v in cli.items() if v is not None})
    return name, opts


def _train_overrides(args: argparse.Namespace) -> dict:
    t = dict(args.train or [])
    for key in ("steps", "batch_size", "val_every", "ckpt_every"):
        if getattr(args, key) is not None:
            t[key] = getattr(args, key)
    return t


def _cmd_sweep(args: argparse.Namespace) -> int:
    cfg = load_sweep(args.file) if args.file else {}
    for key in ("datasets", "methods", "settings", "seeds"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
            for grid in cfg.get("grids") or []:
                grid.pop(key, None)
    cfg["train"] = {**(cfg.get("train") or {}), **_train_overrides(args)}
    for key, value in args.hparam or []:
        method, dot, name = key.partition(".")
        if not dot:
            raise SystemExit(f"--hparam {key}=...: write METHOD.NAME=VALUE")
        cfg.setdefault("hparams", {}).setdefault(method, {})[name] = value
    results = Path(args.results or cfg.get("results") or "results")
    retry = args.retry_failed or bool(cfg.get("retry_failed"))
    from dgbench import cost, preflight
    table = cost.load_table(args.cost_table) if args.dry_run else None   # a bad file fails first
    unusable = preflight.split_problems(sweep_datasets(cfg))
    specs = sweep_specs(cfg, skip=unusable)
    plan = plan_runs(specs, results, retry_failed=retry)
    print(format_plan(plan, verbose=args.dry_run))
    name, opts = executor_options(args, cfg)
    todo = [s for s, act, _ in plan if act in TODO]
    report = preflight.check(todo, name, opts, extra=unusable.values())
    if args.dry_run:
        print(report.format())
        left = [(s, s.train.steps - _progress_steps(RunDir.for_run(results, s.run_id), s)) for s in todo]
        print(cost.estimate(specs, left, table).format())
        return 1 if report.problems else 0
    if report.problems:
        raise preflight.PreflightError(report.format())
    t0 = time.time()
    states = run_specs(specs, results, executor=name, retry_failed=retry, **opts)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st] = counts.get(st, 0) + 1
    print(f"{name}: " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
          + f" ({time.time() - t0:.1f} s); `dgbench status --results {results}` for details")
    return 1 if any(st in ("failed", "interrupted", "invalid") for st in states.values()) else 0


def _cmd_status(args: argparse.Namespace) -> int:
    rows = collect_status(args.results)
    if args.state:
        rows = [r for r in rows if r["state"] in args.state]
    if args.json:
        print(to_json(rows, indent=1))
    else:
        print(format_status(rows, args.results, show_all=args.all))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    spec_file = path / "spec.json" if path.is_dir() else path
    spec = spec_from_file(spec_file)
    if args.results:
        results = Path(args.results)
    elif spec_file.parent.parent.name == "runs":
        results = spec_file.parent.parent.parent
    else:
        raise SystemExit(f"{spec_file} is not inside <results>/runs/<run_id>/: give --results")
    from dgbench.train import execute
    state = execute(spec, results)
    print(f"{spec.run_id}: {state}")
    return {"done": 0, "failed": 1, "invalid": 2}.get(state, 3)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="expand a grid of runs and run what is not done yet",
        description="Expand datasets x methods x settings x seeds (from flags or a YAML sweep "
                    "file; flags win) and run what is not done: done runs are skipped, "
                    "interrupted runs resume from their last checkpoint, failed runs are "
                    "reported (re-run with --retry-failed). First a preflight checks what the runs "
                    "need (datasets prepared in the jobs' cache, split checksums, extractor weights, "
                    "executor options) and stops with every problem and its fix.")
    p.add_argument("--file", "-f", help="YAML sweep file (see sweeps/*.yaml)")
    p.add_argument("--datasets", help="comma-separated dataset names")
    p.add_argument("--methods", help="comma-separated method names")
    p.add_argument("--settings", help="comma-separated settings: full, fewshot-N (default full)")
    p.add_argument("--seeds", help="seeds: 0,1,2 or 0-2 (default 0)")
    p.add_argument("--results", help="results folder (default: the file's, or results)")
    p.add_argument("--steps", type=int, help="training steps (override)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="batch size (override)")
    p.add_argument("--val-every", type=int, dest="val_every", help="validate every N steps (override)")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every", help="checkpoint every N steps (override)")
    p.add_argument("--train", type=parse_kv, action="append", metavar="KEY=VALUE",
                   help="any other training option, e.g. --train patch_size=32 (repeatable)")
    p.add_argument("--hparam", type=parse_kv, action="append", metavar="METHOD.NAME=VALUE",
                   help="method hyperparameter override (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed runs too")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run, what is done and what would resume, the preflight checks "
                        "and the estimated cost; run nothing (exit 1 when the preflight finds problems)")
    p.add_argument("--cost-table", dest="cost_table", metavar="FILE",
                   help="step times for the --dry-run cost estimate, replacing dgbench/costs.yaml "
                        "(default: $DGBENCH_COST_TABLE, else that file)")
    add_executor_args(p)
    p.set_defaults(func=_cmd_sweep)

    p = subparsers.add_parser(
        "status", help="run states in a results folder",
        description="Counts and a table of runs by state (pending / running / stale / failed / "
                    "done, and invalid: spec.json does not hash to the run id), read from the run "
                    "folders. running = a live process holds the run; stale = not done and nothing "
                    "alive holds it (interrupted; the next sweep resumes it). Failed and invalid runs "
                    "with their error, stale and running runs with their last heartbeat.")
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument("--state", action="append", choices=STATES, help="only runs in this state (repeatable)")
    p.add_argument("--all", action="store_true", help="list every run, done and pending too")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.set_defaults(func=_cmd_status)

    p = subparsers.add_parser(
        "run", help="run one run from its spec.json or run folder",
        description="Run (or resume) one run in this process from a spec.json file or a run "
                    "folder <results>/runs/<run_id>. Exit status 0 done, 1 failed, 2 invalid "
                    "(the folder's spec.json does not hash to its id), 3 busy or interrupted.")
    p.add_argument("path", help="spec.json or run folder")
    p.add_argument("--results", help="results folder (default: the one the run folder is in)")
    p.set_defaults(func=_cmd_run)
