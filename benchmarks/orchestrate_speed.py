"""How long sweep bookkeeping takes at paper scale (300 runs), with sbatch mocked.

    python benchmarks/orchestrate_speed.py [--runs 300]

Prints: expanding 300 specs (resolve: registry, defaults, split checksum), planning them against
a results folder, submitting them as one Slurm array (submitit pickles + sbatch script; sbatch
itself mocked), and `dgbench status` over 300 run folders (in-process and as a fresh process,
imports included). The wall time of a real Slurm sweep is printed by tests/test_slurm.py.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from dgbench import orchestrate as orch
from dgbench.atomic import atomic_write_json


def timed(label: str, fn, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<68} {best * 1000:9.1f} ms  (best of {repeat})")
    return out


def grid(n: int) -> dict:
    settings = ["full", "fewshot-1", "fewshot-3", "fewshot-5"]
    return {"datasets": ["synth"], "methods": ["erm"], "settings": settings,
            "seeds": list(range((n + len(settings) - 1) // len(settings))), "train": {"steps": 1000}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    n = ap.parse_args().runs
    tmp = Path(tempfile.mkdtemp(prefix="dgbench-orch-"))

    orch.sweep_specs(grid(4))                    # warm: plug-ins imported once
    specs = timed(f"expand a {n}-run sweep", lambda: orch.sweep_specs(grid(n))[:n])
    assert len(specs) == n
    timed(f"plan {n} runs (empty results folder)", lambda: orch.plan_runs(specs, tmp / "empty"))

    def submit():
        results = Path(tempfile.mkdtemp(dir=tmp))
        ex = orch.get_executor("slurm", wait=False, partition="gpu", time=1440, gpus=1, cpus=8,
                               array_parallelism=32)
        fake = lambda self, *a, **k: "Submitted batch job 4242\n"
        with mock.patch("submitit.core.utils.CommandFunction.__call__", fake), \
                mock.patch("submitit.slurm.slurm.SlurmExecutor.affinity", classmethod(lambda c: 2)):
            states = ex.run(specs, results)
        assert len(states) == n and set(states.values()) == {"submitted"}
        return results
    results = timed(f"submit {n} runs as one array (sbatch mocked; spec.json, pickles)", submit)
    timed(f"plan {n} runs against their queued folders", lambda: orch.plan_runs(specs, results))

    # status over n folders in every state
    kinds = ["done"] * 6 + ["failed", "stale", "running", "pending"]
    for i, spec in enumerate(specs):
        rd = orch._prepare(spec, results)
        kind = kinds[i % len(kinds)]
        if kind in ("running", "stale"):
            atomic_write_json(rd.heartbeat_file, {"time": time.time() - (7200 if kind == "stale" else 1),
                                                  "step": i, "host": "node", "pid": 1})
        elif kind == "done":
            rd.mark_done({"steps": 1000})
        elif kind == "failed":
            rd.mark_failed(RuntimeError("CUDA out of memory"))
    rows = timed(f"status over {n} run folders (collect + format)",
                 lambda: orch.format_status(orch.collect_status(results), results))
    print("   " + rows.splitlines()[0])
    code = ("import sys; from dgbench.orchestrate import collect_status, format_status; "
            "print(format_status(collect_status(sys.argv[1]), sys.argv[1]))")
    timed(f"status over {n} run folders, fresh process (imports included)",
          lambda: subprocess.run([sys.executable, "-c", code, str(results)], check=True,
                                 stdout=subprocess.DEVNULL))
    print(f"(machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; folders in {tmp})")


if __name__ == "__main__":
    main()
