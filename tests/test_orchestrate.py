"""Sweeps, executors and run state (dgbench.orchestrate).

Unit tests use fake run folders and fake Slurm commands on PATH (sbatch, squeue, sacct, scancel,
srun); the local-pool tests train real (tiny) runs on the embedded synthetic benchmark."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from dgbench import orchestrate as orch
from dgbench.rundir import RunDir
from dgbench.atomic import atomic_write_json
from dgbench.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
# The smallest real run: a few steps, one validation, no sliding-window overlap (CPU, seconds).
TINY = {"steps": 6, "val_every": 6, "ckpt_every": 2, "batch_size": 1, "sw_overlap": 0.0,
        "backbone_kwargs": {"width": 4, "levels": 2}}


def cli(*argv: str) -> int:
    """A command through the real parser, exceptions raised (not printed)."""
    from dgbench.cli import build_parser
    args = build_parser(str(argv[0])).parse_args([str(a) for a in argv])
    return args.func(args)


def fake_run(results: Path, spec: RunSpec, state: str, step: int = 4, age: float = 1.0,
             ckpt: bool = False, pid: int | None = None) -> RunDir:
    """A run folder in `state` without training anything."""
    rd = orch._prepare(spec, results)
    if state in ("running", "stale"):
        atomic_write_json(rd.heartbeat_file, {"time": time.time() - age, "step": step,
                                              "host": socket.gethostname(), "pid": pid or os.getpid()})
        atomic_write_json(rd.lock_file, {"host": socket.gethostname(), "pid": pid or os.getpid(),
                                         "time": time.time() - age})
    if ckpt:
        rd.ckpt_dir.mkdir(parents=True, exist_ok=True)
        rd.last_ckpt.write_bytes(b"not a real checkpoint")
    if state == "done":
        rd.mark_done({"steps": step})
    if state == "failed":
        try:
            raise ValueError("loss is nan at step 3\nsecond line")
        except ValueError as e:
            rd.mark_failed(e)
    return rd


def dead_pid() -> int:
    """A pid that is certainly not running (a child that has exited and been reaped)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def specs_n(n: int, dataset: str = "synth", method: str = "erm") -> list[RunSpec]:
    return [RunSpec(dataset=dataset, method=method, seed=i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# expansion and sweep files
# ---------------------------------------------------------------------------------------------
def test_list_and_seed_parsing():
    assert orch.as_list("a, b,,c") == ["a", "b", "c"]
    assert orch.as_list(["a", 1]) == ["a", "1"]
    assert orch.as_list(None) == []
    assert orch.as_seeds("0,1,2") == [0, 1, 2]
    assert orch.as_seeds("0-3") == [0, 1, 2, 3]
    assert orch.as_seeds([0, "2-3"]) == [0, 2, 3]
    assert orch.as_seeds(4) == [4]


def test_expand_is_the_full_grid_without_duplicates():
    specs = orch.expand(["synth"], ["erm"], ["full", "fewshot-5"], [0, 1, 2, 1], train={"steps": 7})
    assert len(specs) == 6
    assert len({s.run_id for s in specs}) == 6
    assert {(s.setting, s.seed) for s in specs} == {(st, sd) for st in ("full", "fewshot-5") for sd in (0, 1, 2)}
    assert all(s.train.steps == 7 and s.split_sha for s in specs)
    # the same grid twice gives the same ids (stable identity)
    assert [s.run_id for s in orch.expand(["synth"], ["erm"], ["full", "fewshot-5"], [0, 1, 2],
                                          train={"steps": 7})] == [s.run_id for s in specs]


def test_expand_rejects_what_it_cannot_mean():
    with pytest.raises(ValueError, match="not in the sweep"):
        orch.expand(["synth"], ["erm"], hparams={"maskgen": {"p": 1}})
    with pytest.raises(ValueError):
        orch.expand(["synth"], ["erm"], ["sometimes"])
    with pytest.raises(ValueError, match="unknown training option"):
        orch.expand(["synth"], ["erm"], train={"stepz": 3})


def test_sweep_file_with_grids(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": "synth", "methods": ["erm"], "seeds": "0-1", "train": {"steps": 9},
        "grids": [{}, {"settings": ["fewshot-3"], "seeds": [5], "train": {"lr": 0.1}}],
        "executor": "local", "local": {"workers": 2}}))
    cfg = orch.load_sweep(path)
    specs = orch.sweep_specs(cfg)
    from dgbench.registry import DATASETS
    default_lr = DATASETS.get("synth").train_defaults["lr"]     # the dataset's recipe, not the sweep's
    assert default_lr != 0.1
    assert [(s.setting, s.seed, s.train.steps, s.train.lr) for s in specs] == [
        ("full", 0, 9, default_lr), ("full", 1, 9, default_lr), ("fewshot-3", 5, 9, 0.1)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [synth]\nmethods: [erm]\nseed: 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        orch.load_sweep(bad)


def test_repository_sweep_files():
    smoke = orch.load_sweep(REPO / "sweeps" / "smoke.yaml")
    from dgbench.registry import METHODS
    missing = [m for m in orch.as_list(smoke["methods"]) if m not in METHODS.names()]
    assert not missing, f"sweeps/smoke.yaml names unregistered methods {missing}"
    specs = orch.sweep_specs(smoke)
    assert len(specs) == 4 and {s.dataset for s in specs} == {"synth"}

    paper = orch.load_sweep(REPO / "sweeps" / "paper.yaml")
    assert orch.as_list(paper["datasets"]) == ["amos", "brats", "topcow", "hvsmr", "pandg", "prostate"]
    assert orch.as_list(paper["methods"]) == ["erm", "maskgen", "features-only", "concat", "heavyaug",
                                              "bigaug", "randconv", "gin", "gin-ipa", "mixstyle", "dsu",
                                              "slaug", "synthseg", "advbias"]
    assert orch.as_seeds(paper["seeds"]) == [0, 1, 2] and orch.as_list(paper["settings"]) == ["full"]


def test_paper_sweeps_resolve_without_data_and_use_the_published_extractor():
    paper = orch.sweep_specs(orch.load_sweep(REPO / "sweeps" / "paper.yaml"))
    few = orch.sweep_specs(orch.load_sweep(REPO / "sweeps" / "fewshot.yaml"))
    assert len(paper) == len(few) == 6 * 14 * 3
    assert {s.setting for s in paper} == {"full"} and {s.setting for s in few} == {"fewshot-5"}
    assert {s.train.steps for s in few} == {40000}
    assert {(s.dataset, s.method, s.seed) for s in paper} == {(s.dataset, s.method, s.seed) for s in few}
    for s in paper + few:
        if "extractor" in s.hparams:          # MaskGen and its feature ablations
            assert s.hparams["extractor"] == "anatomix", s.run_id
    assert {s.method for s in paper if "extractor" in s.hparams} == {"maskgen", "features-only", "concat"}


# ---------------------------------------------------------------------------------------------
# plan, dry run, status
# ---------------------------------------------------------------------------------------------
def test_plan_decides_from_the_folders(tmp_path):
    s = orch.expand(["synth"], ["erm"], seeds=range(7), train={"steps": 5})
    fake_run(tmp_path, s[0], "done")
    fake_run(tmp_path, s[1], "failed")
    fake_run(tmp_path, s[2], "stale", step=40, age=3600, ckpt=True)
    fake_run(tmp_path, s[3], "running", step=12)                       # held by this (live) process
    fake_run(tmp_path, s[4], "running", step=8, ckpt=True, pid=dead_pid())  # its worker was killed
    orch._prepare(s[5], tmp_path)                                       # queued, never started
    actions = {sp.run_id: (a, d) for sp, a, d in orch.plan_runs(s, tmp_path)}
    assert [actions[sp.run_id][0] for sp in s] == ["done", "failed", "resume", "running", "resume", "run", "run"]
    assert "ValueError: loss is nan at step 3" == actions[s[1].run_id][1]
    assert "step 40" in actions[s[2].run_id][1]
    retry = {sp.run_id: a for sp, a, _ in orch.plan_runs(s, tmp_path, retry_failed=True)}
    assert retry[s[1].run_id] == "retry"


def test_dry_run_prints_and_runs_nothing(tmp_path, capsys):
    s = orch.expand(["synth"], ["erm"], seeds=range(4), train={"steps": 5})
    fake_run(tmp_path, s[0], "done")
    fake_run(tmp_path, s[1], "failed")
    fake_run(tmp_path, s[2], "stale", step=40, age=3600, ckpt=True)
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert cli("sweep", "--datasets", "synth", "--methods", "erm", "--seeds", "0-3", "--steps", "5",
               "--results", tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "4 runs: 1 run, 1 resume, 1 done, 1 failed"
    assert re.search(rf"done +{s[0].run_id}", out)
    assert re.search(rf"failed +{s[1].run_id} +ValueError: loss is nan", out)
    assert re.search(rf"resume +{s[2].run_id} +last heartbeat at step 40", out)
    assert re.search(rf"run +{s[3].run_id}", out)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before   # nothing created
    cli("sweep", "--datasets", "synth", "--methods", "erm", "--seeds", "0-3", "--steps", "5",
        "--results", tmp_path, "--dry-run", "--retry-failed")
    assert re.search(rf"retry +{s[1].run_id}", capsys.readouterr().out)


def test_status_over_300_fake_folders(tmp_path, capsys):
    specs = [RunSpec(dataset=d, method=m, seed=sd) for d in ("synth", "amos", "brats", "hvsmr", "topcow")
             for m in ("erm", "maskgen", "gin", "dsu", "mixstyle", "randconv", "slaug", "bigaug",
                       "heavyaug", "advbias") for sd in range(6)]
    assert len(specs) == 300
    kinds = ["done"] * 6 + ["failed", "stale", "running", "pending"]
    for i, spec in enumerate(specs):
        kind = kinds[i % len(kinds)]
        fake_run(tmp_path, spec, kind, step=i, age=7300 if kind == "stale" else 2.0)
    rows = orch.collect_status(tmp_path)          # its speed: benchmarks/orchestrate_speed.py
    table = orch.format_status(rows, tmp_path)
    assert table.splitlines()[0] == f"{tmp_path}: 300 runs - pending 30, running 30, stale 30, failed 30, done 180"
    failed = [r for r in rows if r["state"] == "failed"]
    assert all(r["error"] == "ValueError: loss is nan at step 3" for r in failed)
    stale_line = next(line for line in table.splitlines() if line.strip().startswith("stale "))
    assert re.search(r"step \d+, last heartbeat 2h0[01]m ago on " + re.escape(socket.gethostname()), stale_line)
    assert sum(line.strip().startswith("failed ") for line in table.splitlines()) == 30
    # the CLI prints the same; --state filters
    assert cli("status", "--results", tmp_path, "--state", "failed") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{tmp_path}: 30 runs - pending 0, running 0, stale 0, failed 30")


def test_scan_is_the_one_reader_of_run_state(tmp_path):
    """rundir.scan: typed records of every folder (or of the ids asked for, folders or not)."""
    from dgbench.rundir import RunRecord, scan
    s = orch.expand(["synth"], ["erm"], seeds=range(4), train={"steps": 5})
    fake_run(tmp_path, s[0], "done")
    fake_run(tmp_path, s[1], "failed")
    fake_run(tmp_path, s[2], "stale", step=40, age=3600, ckpt=True)
    records = {r.run_id: r for r in scan(tmp_path)}
    assert sorted(records) == sorted(sp.run_id for sp in s[:3]) and all(isinstance(r, RunRecord) for r in records.values())
    assert records[s[0].run_id].state == "done" and records[s[0].run_id].spec == s[0].to_dict()
    assert records[s[1].run_id].error == "ValueError: loss is nan at step 3"
    stale = records[s[2].run_id]
    assert (stale.state, stale.heartbeat["step"], stale.checkpoint, stale.job_id) == ("stale", 40, True, None)
    asked = scan(tmp_path, [s[3].run_id, s[0].run_id])              # in the order asked; no folder: pending
    assert [(r.run_id, r.state, r.spec) for r in asked] == [(s[3].run_id, "pending", {}), (s[0].run_id, "done", s[0].to_dict())]
    assert [r["state"] for r in orch.collect_status(tmp_path)] == [records[k].state for k in sorted(records)]


def test_a_failed_run_with_an_unreadable_marker_still_says_why_to_look(tmp_path, capsys):
    """failed.json torn or edited: status names the file and the run's log instead of no reason."""
    s = orch.expand(["synth"], ["erm"], seeds=range(2), train={"steps": 5})
    torn, edited = fake_run(tmp_path, s[0], "failed"), fake_run(tmp_path, s[1], "failed")
    torn.failed_file.write_text('{"error": "ValueErr')
    edited.failed_file.write_text('{"time": "2026-11-30T07:00:00"}')
    assert torn.last_error().startswith(f"{torn.failed_file}: unreadable (") and torn.last_error().endswith(f"; see {torn.log_file}")
    assert edited.last_error() == f"{edited.failed_file}: no 'error' entry; see {edited.log_file}"
    assert cli("status", "--results", tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{torn.failed_file}: unreadable" in out and f"{edited.failed_file}: no 'error' entry" in out


def test_status_of_a_missing_results_folder(tmp_path):
    assert orch.collect_status(tmp_path / "nothing") == []
    assert "0 runs" in orch.format_status([], tmp_path)


def test_a_run_whose_process_died_is_stale_everywhere(tmp_path, capsys):
    """One meaning of stale: not done and no live process holds it, however fresh its heartbeat."""
    spec = RunSpec(dataset="synth", method="erm", seed=0)
    fake_run(tmp_path, spec, "running", step=3, pid=dead_pid())        # heartbeat 1 s old, holder dead
    (row,) = orch.collect_status(tmp_path)
    assert row["state"] == "stale" and row["error"] is None
    assert cli("status", "--results", tmp_path, "--json") == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["stale"]
    assert cli("status", "--results", tmp_path, "--state", "stale") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{tmp_path}: 1 runs - pending 0, running 0, stale 1")
    assert re.search(rf"stale +{spec.run_id} +step 3", out)
    assert cli("status", "--results", tmp_path, "--state", "running") == 0
    assert "1 runs" not in capsys.readouterr().out
    fake_run(tmp_path / "live", spec, "running", step=3)                # held by this live process
    assert orch.collect_status(tmp_path / "live")[0]["state"] == "running"


# ---------------------------------------------------------------------------------------------
# locks, claims, spec.json
# ---------------------------------------------------------------------------------------------
def test_prepared_spec_json_is_the_one_train_writes(tmp_path):
    spec = orch.expand(["synth"], ["erm"], train={"steps": 5})[0]
    rd = orch._prepare(spec, tmp_path)
    rd.write_spec(spec)                        # raises if the pre-created file disagrees
    assert orch.spec_from_file(rd.spec_file) == spec


def test_lock_contention_never_trains_a_run_twice(tmp_path):
    spec = orch.expand(["synth"], ["erm"], train=TINY)[0]
    rd = RunDir.for_run(tmp_path, spec.run_id)
    assert rd.acquire_lock()                   # "another process" (this one) holds the run
    rd.beat(2)
    try:
        assert orch.InlineExecutor().run([spec], tmp_path) == {spec.run_id: "busy"}
        # a sweep sees the live holder and does not even start it
        assert orch.run_specs([spec], tmp_path) == {spec.run_id: "running"}
        assert not rd.done_file.exists() and not rd.failed_file.exists()
    finally:
        rd.release_lock()


def test_requeued_task_takes_back_its_own_lock_only(tmp_path, fake_slurm):
    fake_slurm.set(squeue_fails=True)          # Slurm cannot be asked
    rd = RunDir(tmp_path / "runs" / "r")
    rd.path.mkdir(parents=True)
    holder = {"host": "node-7", "pid": 4242, "time": time.time()}
    atomic_write_json(rd.lock_file, holder)
    atomic_write_json(rd.path / orch.EXECUTOR_FILE, {"executor": "slurm", "job_id": "12_3", **holder})
    orch._claim(rd, "99_0")                    # another job: leaves the lock, records nothing
    assert json.loads(rd.lock_file.read_text())["pid"] == 4242
    assert json.loads((rd.path / orch.EXECUTOR_FILE).read_text())["job_id"] == "12_3"
    orch._claim(rd, "12_3")                    # the same job, requeued on another node
    assert not rd.lock_file.exists()
    info = json.loads((rd.path / orch.EXECUTOR_FILE).read_text())
    assert info["job_id"] == "12_3" and info["pid"] == os.getpid()


def test_get_executor_names_and_options():
    assert isinstance(orch.get_executor("inline"), orch.InlineExecutor)
    assert orch.get_executor("local", gpus="0,1").workers == 2
    with pytest.raises(ValueError, match="unknown executor"):
        orch.get_executor("kubernetes")
    with pytest.raises(ValueError, match="executor 'local'"):
        orch.get_executor("local", partitions="gpu")


def test_local_worker_pins_its_gpu_and_threads(monkeypatch):
    import dgbench.train
    seen = {}

    def fake_execute(spec, results, progress=True):
        seen.update(gpu=os.environ.get("CUDA_VISIBLE_DEVICES"), threads=os.environ.get("OMP_NUM_THREADS"),
                    run_id=spec.run_id, progress=progress)
        return "busy"
    monkeypatch.setattr(dgbench.train, "execute", fake_execute)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    spec = RunSpec(dataset="synth", method="erm", seed=3)
    with pytest.raises(SystemExit) as e:
        orch._local_worker(spec.to_dict(), "results", "1", 4)
    assert e.value.code == orch.EXIT_BUSY
    assert seen == {"gpu": "1", "threads": "4", "run_id": spec.run_id, "progress": False}


# ---------------------------------------------------------------------------------------------
# Slurm submission through submitit's public path: fake sbatch / squeue / sacct / scancel / srun
# ---------------------------------------------------------------------------------------------
FAKE_SLURM = """#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(sys.argv[0])
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps([name] + sys.argv[1:]) + "\\n")
states = json.load(open(os.path.join(here, "states.json"))) if os.path.exists(os.path.join(here, "states.json")) else {{}}
if name == "sbatch":
    print("Submitted batch job 4242")
elif name == "squeue":
    if states.get("squeue_fails"):
        sys.exit("squeue: error: cannot reach slurmctld")
    for job, st in states.get("jobs", {{}}).items():
        print(job, st)
elif name == "sacct":
    print("JobID|State|NodeList")
    for job, st in states.get("jobs", {{}}).items():
        print(f"{{job}}|{{st}}|node-1")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, squeue, sacct, scancel and srun on PATH: small scripts that record every call
    (bin/calls.jsonl) and answer from bin/states.json ({"jobs": {id: state}, "squeue_fails": bool})."""
    import sys
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scancel", "srun"):
        (bin_ / name).write_text(FAKE_SLURM.format(python=sys.executable))
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")

    class Slurm:
        def calls(self, name: str) -> list[list[str]]:
            path = bin_ / "calls.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            return [r[1:] for r in rows if r[0] == name]

        def set(self, **states) -> None:
            (bin_ / "states.json").write_text(json.dumps(states))
    return Slurm()


def test_slurm_submits_one_array_with_the_options(tmp_path, fake_slurm):
    results = tmp_path / "results"
    specs = orch.expand(["synth"], ["erm"], seeds=range(5), train={"steps": 5})
    fake_run(results, specs[0], "done")
    states = orch.run_specs(specs, results, executor="slurm", wait=False, partition="gpu",
                            account="lab", qos="high", time=60, gpus=1, cpus=4, mem_gb=16,
                            array_parallelism=2, sbatch={"constraint": "a100", "exclusive": True},
                            setup=["module load cuda"])
    assert states == {specs[0].run_id: "done", **{s.run_id: "submitted" for s in specs[1:]}}
    (call,) = fake_slurm.calls("sbatch")                # one array, one sbatch
    script = Path(call[0]).read_text()
    for line in ("--array=0-3%2", "--partition=gpu", "--account=lab", "--qos=high", "--time=60",
                 "--gpus-per-node=1", "--cpus-per-task=4", "--mem=16GB", "--constraint=a100",
                 "#SBATCH --exclusive\n", "module load cuda"):
        assert line in script, line
    for i, spec in enumerate(specs[1:]):
        info = json.loads((results / "runs" / spec.run_id / orch.EXECUTOR_FILE).read_text())
        assert info["job_id"] == f"4242_{i}"
        assert orch.spec_from_file(results / "runs" / spec.run_id / "spec.json") == spec
    # the queued runs show up as pending, with their job
    rows = {r["run_id"]: r for r in orch.collect_status(results)}
    assert rows[specs[1].run_id]["state"] == "pending" and rows[specs[1].run_id]["job_id"] == "4242_0"


def test_slurm_wait_ends_when_squeue_says_the_jobs_ended(tmp_path, fake_slurm):
    """A job that ended without a result file and without a final marker (cancelled, node lost)
    is "interrupted"; one whose run folder says done is "done". Squeue is asked, never trusted over
    the folder."""
    results = tmp_path / "results"
    specs = orch.expand(["synth"], ["erm"], seeds=range(2), train={"steps": 5})
    fake_slurm.set(jobs={"4242_0": "CANCELLED", "4242_1": "RUNNING"})
    ex = orch.get_executor("slurm", wait=True, time=60, poll_s=0.05, timeout_s=60)
    jobs = ex.submit(specs, results)
    assert [j.job_id for j in jobs.values()] == ["4242_0", "4242_1"]
    RunDir.for_run(results, specs[1].run_id).mark_done({"steps": 5})     # the running job's run finished
    assert ex.wait_for(jobs, results) == {specs[0].run_id: "interrupted", specs[1].run_id: "done"}
    assert all(call[:4] == ["-h", "-r", "-t", "all"] and call[5] == "4242" for call in fake_slurm.calls("squeue"))
    # a running run whose job has ended is stale in the plan and in status (one answer: rundir.scan)
    fake_run(results, specs[0], "running", step=3)
    lock = json.loads(RunDir.for_run(results, specs[0].run_id).lock_file.read_text())
    atomic_write_json(RunDir.for_run(results, specs[0].run_id).lock_file, {**lock, "host": "node-1"})
    assert [a for _, a, _ in orch.plan_runs(specs[:1], results)] == ["run"]
    assert orch.collect_status(results)[0]["state"] == "stale"
    fake_slurm.set(jobs={"4242_0": "RUNNING"})
    assert [a for _, a, _ in orch.plan_runs(specs[:1], results)] == ["running"]
    assert {r["run_id"]: r["state"] for r in orch.collect_status(results)}[specs[0].run_id] == "running"


def test_executor_options_from_flags_and_file():
    from dgbench.cli_args import add_executor_args, executor_options
    parser = argparse.ArgumentParser()
    add_executor_args(parser)
    args = parser.parse_args(["--executor", "slurm", "--partition", "p", "--sbatch", "time-min=1:00:00",
                              "--sbatch", "exclusive", "--setup", "source env.sh", "--wait"])
    name, opts = executor_options(args, {"slurm": {"partition": "q", "gpus": 1, "setup": ["a"]}})
    assert name == "slurm"
    assert opts == {"partition": "p", "gpus": 1, "setup": ["a", "source env.sh"], "wait": True,
                    "sbatch": {"time-min": "1:00:00", "exclusive": True}}
    name, opts = executor_options(parser.parse_args([]), {"executor": "local", "local": {"workers": 3}})
    assert (name, opts) == ("local", {"workers": 3})


def test_every_subcommand_has_help(capsys):
    for cmd in ("sweep", "status", "run"):
        with pytest.raises(SystemExit) as e:
            cli(cmd, "--help")
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# real runs: inline and the local pool (tiny training on the synthetic benchmark; synth_prepared,
# from conftest.py, generates it once before parallel workers would all do it at once)
# ---------------------------------------------------------------------------------------------
def test_run_command_runs_one_spec(tmp_path, on_tiny_folder, capsys):
    spec = orch.expand(["folder"], ["erm"], train=TINY)[0]
    rd = orch._prepare(spec, tmp_path)
    assert cli("run", rd.path) == 0
    assert capsys.readouterr().out.strip() == f"{spec.run_id}: done"
    assert rd.metrics_file.exists()
    assert cli("run", rd.spec_file) == 0       # done: nothing to do


@pytest.mark.slow
def test_local_pool_survives_a_killed_worker(tmp_path, on_tiny_folder, capfd):
    """Two workers run a sweep; one worker is SIGKILLed mid-run; re-running the sweep resumes that
    run from its checkpoint and leaves the finished one alone."""
    short = orch.expand(["folder"], ["erm"], seeds=[0], train=TINY)[0]
    long = orch.expand(["folder"], ["erm"], seeds=[1], train={**TINY, "steps": 120, "val_every": 120})[0]
    specs = [short, long]
    rd_long = RunDir.for_run(tmp_path, long.run_id)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(orch.run_specs(specs, tmp_path, executor="local", workers=2)))
    t.start()
    deadline = time.time() + 600
    while time.time() < deadline:
        hb = rd_long.heartbeat()
        if hb and hb["step"] >= 4 and rd_long.last_ckpt.exists() and rd_long.lock_file.exists():
            break
        time.sleep(0.2)
    else:
        pytest.fail("the long run never reached a checkpoint")
    pid = json.loads(rd_long.lock_file.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    t.join(600)
    assert out == {short.run_id: "done", long.run_id: "interrupted"}
    assert orch.collect_status(tmp_path)  # readable while a lock is orphaned
    done_mtime = RunDir.for_run(tmp_path, short.run_id).done_file.stat().st_mtime_ns
    plan = {s.run_id: a for s, a, _ in orch.plan_runs(specs, tmp_path)}
    assert plan == {short.run_id: "done", long.run_id: "resume"}

    assert orch.run_specs(specs, tmp_path, executor="local", workers=2) == \
        {short.run_id: "done", long.run_id: "done"}
    assert RunDir.for_run(tmp_path, short.run_id).done_file.stat().st_mtime_ns == done_mtime
    resumed = [int(m) for m in re.findall(r"resumed from step (\d+)", rd_long.log_file.read_text())]
    assert resumed and resumed[0] >= 4
    assert json.loads(rd_long.done_file.read_text())["steps"] == 120
    assert rd_long.metrics_file.exists()
    err = capfd.readouterr().err                 # not a terminal: progress lines, no tqdm frames
    assert "\r" not in err and re.search(r"^2 runs, 2 workers: \d+/\d+ step", err, re.M)
