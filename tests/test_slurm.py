"""Sweeps on a real Slurm (started by .ci/slurm-up.sh; .ci/run sets DGBENCH_SLURM=1).

Skipped when DGBENCH_SLURM is unset; when it is set, an unreachable Slurm is a failure, never a
skip. Runs train for real (tiny) on the embedded synthetic benchmark. The preemption/requeue test
takes about 3 minutes (Slurm requeues after ~2 min) and runs only with DGBENCH_SLURM_REQUEUE=1.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgbench import orchestrate as orch
from dgbench.rundir import RunDir

pytestmark = pytest.mark.slurm

TINY = {"steps": 6, "val_every": 6, "ckpt_every": 2, "batch_size": 1, "sw_overlap": 0.0,
        "backbone_kwargs": {"width": 4, "levels": 2}}
SLURM = {"time": 30, "cpus": 1, "poll_s": 2.0, "timeout_s": 1200}   # time > 10 min (Slurm may round shorter limits down)
SECOND_METHODS = ("mixstyle", "randconv", "gin", "dsu", "bigaug", "heavyaug")


def _say(request, text: str) -> None:
    """A line in the pytest output even with capture on (the measured wall times). On stderr:
    a pytest-xdist worker's stdout does not reach the terminal, its stderr does."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(text, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(text, file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def slurm(request):
    """Slurm is up (else skip, or fail under DGBENCH_SLURM=1); synth is prepared (conftest.py) in
    the session's DGBENCH_CACHE, which the jobs inherit through sbatch's environment."""
    if not os.environ.get("DGBENCH_SLURM"):
        pytest.skip("DGBENCH_SLURM is not set (.ci/run sets it after .ci/slurm-up.sh)")
    conf = Path(os.environ.get("DGBENCH_SLURM_DIR", "/tmp/dgbench-slurm")) / "slurm.conf"
    if "SLURM_CONF" not in os.environ and conf.exists():
        os.environ["SLURM_CONF"] = str(conf)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"DGBENCH_SLURM=1 but Slurm is unreachable: {e}")
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        pytest.fail(f"DGBENCH_SLURM=1 but Slurm is not usable (SLURM_CONF={os.environ.get('SLURM_CONF')}): "
                    f"sinfo rc={out.returncode} out={out.stdout!r} err={out.stderr.strip()!r}")
    request.getfixturevalue("synth_prepared")


@pytest.fixture(scope="module")
def array_sweep(slurm, tmp_path_factory, request):
    """2 methods x 2 seeds as one job array, waited for: (results, specs, states, wall_s)."""
    from dgbench.registry import METHODS
    second = next((m for m in SECOND_METHODS if m in METHODS.names()), None)
    results = tmp_path_factory.mktemp("slurm-sweep")
    if second:
        specs = orch.expand(["synth"], ["erm", second], seeds=[0, 1], train=TINY)
    else:  # only erm registered: a second recipe stands in for the second method
        specs = (orch.expand(["synth"], ["erm"], seeds=[0, 1], train=TINY)
                 + orch.expand(["synth"], ["erm"], seeds=[0, 1], train={**TINY, "lr": 1e-3}))
    t0 = time.time()
    states = orch.run_specs(specs, results, executor="slurm", wait=True, **SLURM)
    wall = time.time() - t0
    _say(request, f"\n[slurm] {len(specs)}-run array sweep (erm, {second or 'erm lr=1e-3'} x 2 seeds): "
                  f"{wall:.1f} s wall, submit to last result")
    return results, specs, states, wall


def _job(results: Path, run_id: str) -> str:
    return json.loads((results / "runs" / run_id / orch.EXECUTOR_FILE).read_text())["job_id"]


def _squeue_state(job_id: str) -> str | None:
    return (orch.slurm_job_states([job_id]) or {}).get(job_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_array_sweep_collects_real_results(array_sweep):
    results, specs, states, _ = array_sweep
    assert states == {s.run_id: "done" for s in specs}
    for spec in specs:
        rd = RunDir.for_run(results, spec.run_id)
        assert rd.done_file.exists() and rd.metrics_file.exists(), spec.run_id
        assert "dice" in rd.metrics_file.read_text().splitlines()[0]
    jobs = [_job(results, s.run_id) for s in specs]
    assert len({j.split("_")[0] for j in jobs}) == 1, f"not one array: {jobs}"
    assert sorted(int(j.split("_")[1]) for j in jobs) == list(range(len(specs)))
    rows = orch.collect_status(results)
    assert [r["state"] for r in rows] == ["done"] * len(specs)


def test_cancelled_job_resumes_and_nothing_else_reruns(array_sweep, request):
    results, specs, _, _ = array_sweep
    long = orch.expand(["synth"], ["erm"], seeds=[7], train={**TINY, "steps": 40, "val_every": 40})[0]
    rd = RunDir.for_run(results, long.run_id)
    marks = {s.run_id: (RunDir.for_run(results, s.run_id).done_file.stat().st_mtime_ns, _job(results, s.run_id))
             for s in specs}

    assert orch.run_specs([long], results, executor="slurm", wait=False, **SLURM) == {long.run_id: "submitted"}
    job = _job(results, long.run_id)
    deadline = time.time() + 600
    while time.time() < deadline:
        hb = rd.heartbeat()
        if hb and hb["step"] >= 4 and rd.last_ckpt.exists() and rd.lock_file.exists():
            break
        assert not rd.done_file.exists(), "the run finished before it could be cancelled"
        time.sleep(0.5)
    else:
        pytest.fail(f"job {job} never reached a checkpoint; log: {rd.log_file.read_text() if rd.log_file.exists() else '-'}")
    holder = json.loads(rd.lock_file.read_text())["pid"]
    subprocess.run(["scancel", job], check=True)
    deadline = time.time() + 120      # SIGTERM is ignored under submitit; KillWait then SIGKILL
    while time.time() < deadline and (_pid_alive(holder) or _squeue_state(job) not in orch.SLURM_ENDED):
        time.sleep(0.5)
    assert _squeue_state(job) == "CANCELLED" and not _pid_alive(holder)
    assert rd.state() in ("running", "stale") and not rd.done_file.exists()

    t0 = time.time()
    states = orch.run_specs(specs + [long], results, executor="slurm", wait=True, **SLURM)
    _say(request, f"\n[slurm] resubmission after scancel (1 resumed run): {time.time() - t0:.1f} s wall")
    assert states == {**{s.run_id: "done" for s in specs}, long.run_id: "done"}
    new_job = _job(results, long.run_id)
    assert new_job != job
    resumed = [int(m) for m in re.findall(r"resumed from step (\d+)", rd.log_file.read_text())]
    assert resumed and resumed[0] >= 4, rd.log_file.read_text()
    assert json.loads(rd.done_file.read_text())["steps"] == 40 and rd.metrics_file.exists()
    for s in specs:    # done runs were neither re-run nor re-submitted
        assert (RunDir.for_run(results, s.run_id).done_file.stat().st_mtime_ns, _job(results, s.run_id)) \
            == marks[s.run_id]


def test_failing_run_is_reported_with_its_error(slurm, tmp_path):
    # a real failure at the start of a run (spec checks cannot see it; only the sweep command's
    # preflight would): the extractor's weights file does not exist
    bad = orch.expand(["synth"], ["maskgen"], train=TINY,
                      hparams={"maskgen": {"extractor_weights": "/nonexistent/no-such-backbone.pt"}})[0]
    assert orch.run_specs([bad], tmp_path, executor="slurm", wait=True, **SLURM) == {bad.run_id: "failed"}
    (row,) = orch.collect_status(tmp_path)
    assert row["state"] == "failed" and "no-such-backbone" in row["error"]
    table = orch.format_status([row], tmp_path)
    assert re.search(rf"failed +{bad.run_id} +.*no-such-backbone", table), table
    job = _job(tmp_path, bad.run_id)
    # re-submitting reports it and submits nothing; --retry-failed runs it again
    assert orch.run_specs([bad], tmp_path, executor="slurm", wait=True, **SLURM) == {bad.run_id: "failed"}
    assert _job(tmp_path, bad.run_id) == job
    assert orch.run_specs([bad], tmp_path, executor="slurm", wait=True, retry_failed=True, **SLURM) \
        == {bad.run_id: "failed"}
    assert _job(tmp_path, bad.run_id) != job


@pytest.mark.skipif(not os.environ.get("DGBENCH_SLURM_REQUEUE"), reason="3-minute requeue test: DGBENCH_SLURM_REQUEUE=1")
def test_preempted_job_is_requeued_and_resumes(slurm, tmp_path, request):
    """Simulated preemption, as Slurm preempts: SIGTERM, then the signal submitit asks Slurm for
    before the end (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise), sent with scancel.
    checkpoint() requeues the same job id, which resumes the run from its last checkpoint."""
    spec = orch.expand(["synth"], ["erm"], seeds=[3], train={**TINY, "steps": 40, "val_every": 40})[0]
    ex = orch.get_executor("slurm", wait=False, **{**SLURM, "time": 20})
    (job,) = ex.submit([spec], tmp_path).values()
    rd = RunDir.for_run(tmp_path, spec.run_id)
    deadline = time.time() + 600
    while not (rd.last_ckpt.exists() and (rd.heartbeat() or {}).get("step", 0) >= 4):
        assert time.time() < deadline, "never reached a checkpoint"
        time.sleep(0.5)
    t0 = time.time()
    for signal in ("SIGTERM", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")):
        subprocess.run(["scancel", job.job_id, "--signal", signal], check=True)
    states = ex.wait_for({spec.run_id: job}, tmp_path)
    _say(request, f"\n[slurm] preempt -> requeue -> done: {time.time() - t0:.1f} s")
    assert states == {spec.run_id: "done"}
    assert _job(tmp_path, spec.run_id) == job.job_id            # same job, requeued
    resumed = [int(m) for m in re.findall(r"resumed from step (\d+)", rd.log_file.read_text())]
    assert resumed and resumed[0] >= 4
