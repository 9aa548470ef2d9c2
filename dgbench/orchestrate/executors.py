"""Executors: where runs run. One interface, ``.run(specs, results) -> {run_id: state}``:
  inline   in this process, one run after another (tests, ``make bench``)
  local    a pool of N worker processes (spawn), each pinned to one GPU when GPUs are listed
  slurm    one submitit job array (dgbench.orchestrate.slurm)
and ``run_specs``, which plans (done runs skipped, failed ones reported) and runs the rest."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable

from dgbench.errors import UserError
from dgbench.orchestrate.plan import TODO, plan_runs
from dgbench.orchestrate.sweep import as_list
from dgbench.rundir import RunDir
from dgbench.atomic import read_json
from dgbench.spec import RunSpec

EXECUTORS = ("inline", "local", "slurm")
EXIT_FAILED, EXIT_BUSY = 10, 11          # local worker exit codes


def _prepare(spec: RunSpec, results: Path) -> RunDir:
    """Create the run folder with its spec.json, so that `status` lists queued runs as pending."""
    rd = RunDir.for_run(results, spec.run_id)
    rd.write_spec(spec)
    return rd


def spec_from_file(path: str | Path) -> RunSpec:
    """The RunSpec in a spec.json (as written by dgbench.train: {"spec": ...}, or a bare spec).
    Inside a run folder, the spec must be that folder's (RunDir.read_spec; RunFolderError if not)."""
    path = Path(path)
    if path.name == "spec.json" and path.parent.parent.name == "runs":
        spec = RunDir(path.parent).read_spec()
        if spec is None:
            raise UserError(f"{path}: no such file")
        return RunSpec.from_dict(spec)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except ValueError as e:
        raise UserError(f"{path}: not a JSON run spec ({e})") from None
    return RunSpec.from_dict(data["spec"] if "spec" in data else data)


def final_state(rd: RunDir) -> str:
    st = rd.state()
    return st if st in ("done", "failed", "invalid") else "interrupted"


def progress_steps(rd: RunDir, spec: RunSpec) -> int:
    """Steps a run has reached, from its files (heartbeat; all of them once done)."""
    if rd.done_file.exists():
        return spec.train.steps
    hb = rd.heartbeat()
    return int(hb.get("step", 0)) if hb else 0


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
            raise UserError("local executor: workers must be >= 1")
        if threads is None and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.threads, self.poll_s = threads, poll_s

    def run(self, specs: list[RunSpec], results: str | Path) -> dict[str, str]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        from dgbench.progress import progress
        ctx = mp.get_context("spawn")
        results = Path(results)
        queue, states = list(specs), {}
        free = list(range(self.workers))
        running: dict[Any, tuple[RunSpec, int]] = {}

        def steps_done() -> int:
            return sum(progress_steps(RunDir.for_run(results, s.run_id), s) for s in specs)
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
                    states[spec.run_id] = "busy" if p.exitcode == EXIT_BUSY else final_state(rd)
            bar.close()
        except BaseException:
            bar.close()
            for p in running:                # leave the runs resumable, never orphaned
                p.terminate()
            for p in running:
                p.join(10)
            raise
        return states


def executor_class(name: str) -> type:
    if name == "slurm":
        from dgbench.orchestrate.slurm import SlurmExecutor
        return SlurmExecutor
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    return {"inline": InlineExecutor, "local": LocalExecutor}[name]


def get_executor(name: str, **opts: Any):
    """inline | local (workers, gpus) | slurm (see SlurmExecutor)."""
    cls = executor_class(name)
    try:
        return cls(**opts)
    except TypeError as e:
        raise UserError(f"executor {name!r}: {e}") from None


def run_specs(specs: Iterable[RunSpec], results: str | Path, executor: str = "inline",
              retry_failed: bool = False, **opts: Any) -> dict[str, str]:
    """Run what is not done yet; {run_id: state} for every spec given.

    Done runs are skipped, unfinished ones resumed, failed ones reported as "failed" (and
    re-run only with retry_failed), runs that a live process holds reported as "running", run
    folders whose spec.json names another run reported as "invalid" (never run). Runs of a
    dataset whose split `dgbench prepare` has not derived yet are refused (their ids would change)."""
    specs = list(specs)
    unprepared = sorted({s.dataset for s in specs if s.provisional})
    if unprepared:
        raise UserError("; ".join(f"dataset {d}: its split is derived from the files by `dgbench prepare {d} "
                                  f"--root PATH`, and a run's id includes the split's checksum" for d in unprepared)
                        + ": prepare first (docs/datasets.md), then run again")
    plan = plan_runs({s.run_id: s for s in specs}.values(), results, retry_failed=retry_failed)
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
