"""Faults in runs: kills, interrupts, torn checkpoints, races, full disks, edited run folders,
wrong names and options.

Each test injects one fault and asserts that nothing is lost: an interrupted run resumes to
results identical to the run never interrupted (`clean`), and every bad folder, name or option
ends in an error that names the file and the fix, never in silently wrong results."""
from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgbench import atomic, orchestrate, rundir
from dgbench.cli import main
from conftest import interrupted_run
from test_orchestrate import dead_pid
from dgbench.rundir import RunDir
from dgbench.atomic import atomic_write_json
from dgbench.train import Trainer, execute

FORK = mp.get_context("fork")        # children share the parent's imports: a run costs about a second
BENCH = ["bench", "--dataset", "folder", "--method", "erm", "--versus", "none", "--seeds", "0",
         "--steps", "6", "--batch-size", "2", "--train", "val_every=3", "--train", "ckpt_every=2",
         "--train", "sw_overlap=0", "--train", "backbone_kwargs={width: 4, levels: 2}"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def assert_same_results(rd: RunDir, ref: RunDir) -> None:
    """Nothing lost: the same per-case Dice, validation history, per-step losses and verdict."""
    read = lambda r: list(csv.DictReader(open(r.metrics_file)))
    a, b = read(rd), read(ref)
    assert [(r["selection"], r["case"], r["class"], r["dice"]) for r in a] == \
           [(r["selection"], r["case"], r["class"], r["dice"]) for r in b]
    assert rd.val_history.read_text() == ref.val_history.read_text()
    assert rd.train_loss.read_text() == ref.train_loss.read_text()
    done, done_ref = (json.loads(r.done_file.read_text()) for r in (rd, ref))
    assert done["convergence"] == done_ref["convergence"] and done["best_step"] == done_ref["best_step"]


def temp_files(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("*.tmp*"))


def forked(target, *args) -> mp.Process:
    p = FORK.Process(target=target, args=args)
    p.start()
    return p


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------------------------
# kills and interrupts: resumed runs equal the uninterrupted one
# ---------------------------------------------------------------------------------------------
def test_sigkill_in_training_resumes_identically_and_status_says_stale(tmp_path, fault_spec, clean, capsys):
    def child():
        orig = Trainer.train_step

        def slow(self, x, y):               # leaves time to be killed after the first checkpoint
            if self.step >= 2:
                time.sleep(0.5)
            return orig(self, x, y)
        Trainer.train_step = slow
        execute(fault_spec, tmp_path, progress=False)

    rd = RunDir.for_run(tmp_path, fault_spec.run_id)
    p = forked(child)
    deadline = time.time() + 120
    while time.time() < deadline and not (rd.heartbeat() or {}).get("step", 0) >= 2:
        time.sleep(0.02)
    p.kill()
    p.join()
    assert p.exitcode == -signal.SIGKILL and not rd.done_file.exists() and rd.lock_file.exists()
    # one meaning of stale: a fresh heartbeat, but no live process holds the run
    (row,) = orchestrate.collect_status(tmp_path)
    assert row["state"] == "stale"
    assert main(["status", "--results", str(tmp_path), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["stale"]
    assert main(["status", "--results", str(tmp_path), "--state", "stale"]) == 0
    assert fault_spec.run_id in capsys.readouterr().out
    # as if killed between writing train_loss.csv and last.pt: rows past the checkpoint step
    ck_step = torch.load(rd.last_ckpt, weights_only=False)["step"]
    kept = [line for line in rd.train_loss.read_text().splitlines()[1:] if int(line.split(",")[0]) <= ck_step]
    assert len(kept) == ck_step
    rd.train_loss.write_text("\n".join(["step,loss", *kept] + [f"{ck_step + i},999" for i in (1, 2)]) + "\n")
    assert execute(fault_spec, tmp_path, progress=False) == "done"          # breaks the dead holder's lock
    assert f"resumed from step {ck_step}" in rd.log_file.read_text()
    assert_same_results(rd, clean)


def test_sigkill_in_evaluation(tmp_path, fault_spec, clean):
    def child():
        import dgbench.train as train
        orig = train.evaluate_cases

        def evaluate(net, method, prepared, cases, *a, **k):
            if any(split == "test" for split, _ in cases):      # the final evaluation has begun
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(net, method, prepared, cases, *a, **k)
        train.evaluate_cases = evaluate
        execute(fault_spec, tmp_path, progress=False)

    p = forked(child)
    p.join()
    rd = RunDir.for_run(tmp_path, fault_spec.run_id)
    assert p.exitcode == -signal.SIGKILL and not rd.metrics_file.exists() and rd.state() == "stale"
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    assert "resumed from step 6" in rd.log_file.read_text()
    assert_same_results(rd, clean)


def test_sigkill_during_a_checkpoint_write(tmp_path, fault_spec, clean):
    def child():
        orig, calls = rundir.atomic_write_bytes, []

        def torn(path, data):
            if Path(path).name == "last.pt":
                calls.append(path)
                if len(calls) == 2:          # the step-4 checkpoint: half written, then killed
                    atomic._tmp_name(Path(path)).write_bytes(data[: len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return orig(path, data)
        rundir.atomic_write_bytes = torn
        execute(fault_spec, tmp_path, progress=False)

    p = forked(child)
    p.join()
    rd = RunDir.for_run(tmp_path, fault_spec.run_id)
    assert p.exitcode == -signal.SIGKILL and temp_files(rd.path)             # debris of the torn write
    assert torch.load(rd.last_ckpt, weights_only=False)["step"] == 2         # the complete one survived
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    assert "resumed from step 2" in rd.log_file.read_text()
    assert temp_files(tmp_path) == []                                        # the next holder cleans up
    assert_same_results(rd, clean)


def test_sigint(tmp_path, fault_spec, clean, monkeypatch):
    orig = Trainer.train_step

    def step(self, x, y):
        if self.step == 3:
            signal.raise_signal(signal.SIGINT)      # Ctrl-C, delivered as KeyboardInterrupt
        return orig(self, x, y)
    monkeypatch.setattr(Trainer, "train_step", step)
    # Python's own Ctrl-C handler, also where the test runner started with SIGINT ignored (a
    # background job of a non-interactive shell: `cmd &` in a CI script)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(fault_spec, tmp_path, progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    rd = RunDir.for_run(tmp_path, fault_spec.run_id)
    assert not rd.lock_file.exists() and rd.state() == "stale" and temp_files(tmp_path) == []
    assert "interrupted (KeyboardInterrupt)" in rd.log_file.read_text()
    monkeypatch.undo()
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    assert_same_results(rd, clean)


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, fault_spec, clean):
    rd = interrupted_run(fault_spec, tmp_path, at_step=5)        # checkpoints of steps 2 and 4
    assert torch.load(rd.prev_ckpt, weights_only=False)["step"] == 2
    rd.last_ckpt.write_bytes(rd.last_ckpt.read_bytes()[:1000])    # half-written, torn by the file system
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    log = rd.log_file.read_text()
    assert f"{rd.last_ckpt}: unreadable checkpoint" in log and "resumed from the previous checkpoint prev.pt (step 2)" in log
    assert_same_results(rd, clean)


def test_no_readable_checkpoint_names_the_file_and_the_fix(tmp_path, fault_spec, clean):
    rd = interrupted_run(fault_spec, tmp_path, at_step=3)        # only the step-2 checkpoint
    rd.last_ckpt.write_bytes(b"")
    rd.prev_ckpt.unlink(missing_ok=True)
    assert execute(fault_spec, tmp_path, progress=False) == "failed"
    error = json.loads(rd.failed_file.read_text())["error"]
    assert f"{rd.last_ckpt}: unreadable checkpoint" in error
    assert f"delete it (rm {rd.last_ckpt}) to restart the run from step 0" in error
    assert execute(fault_spec, tmp_path, progress=False) == "failed"     # the same clear error, every time
    rd.last_ckpt.unlink()                                                # the fix it names
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    assert_same_results(rd, clean)


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------
def test_four_concurrent_benches_on_one_results_folder(tmp_path, fault_spec, clean, capsys):
    from dgbench.cli import bench_specs, build_parser
    argv = BENCH + ["--results", str(tmp_path)]
    assert [s.run_id for s in bench_specs(build_parser().parse_args(argv))] == [fault_spec.run_id]
    start = FORK.Barrier(4)

    def child():
        start.wait(60)
        rc = main(argv)
        sys.stdout.flush()
        os._exit(rc)
    procs = [forked(child) for _ in range(4)]
    for p in procs:
        p.join(300)
    assert all(p.exitcode in (0, 1) for p in procs)          # done, or "busy"/"running": never a crash
    rd = RunDir.for_run(tmp_path, fault_spec.run_id)
    assert rd.log_file.read_text().count(f"start {fault_spec.run_id}") == 1     # trained exactly once
    assert_same_results(rd, clean)
    capsys.readouterr()
    mtime = rd.metrics_file.stat().st_mtime_ns
    assert main(argv) == 0 and "| erm" in capsys.readouterr().out             # done: reused, tabulated
    assert rd.metrics_file.stat().st_mtime_ns == mtime


def test_lock_has_exactly_one_winner_among_four_simultaneous_takers(tmp_path):
    for rep in range(20):
        rd = RunDir(tmp_path / f"run{rep}")
        if rep % 2:                                  # all four find a dead holder's lock and break it
            rd.path.mkdir()
            atomic_write_json(rd.lock_file, {"host": socket.gethostname(), "pid": dead_pid(), "time": time.time()})
        start, hold, won = FORK.Barrier(4), FORK.Barrier(4), FORK.Queue()

        def child():
            start.wait(60)
            won.put(rd.acquire_lock())
            hold.wait(60)                            # holders stay alive until every taker has tried
        procs = [forked(child) for _ in range(4)]
        wins = [won.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
        assert sum(wins) == 1, f"try {rep}: {sum(wins)} winners"
    rd = RunDir(tmp_path / "unreadable")
    rd.path.mkdir()
    rd.lock_file.write_text("")                      # being written, or by an older dgbench: held while fresh
    assert not rd.acquire_lock()
    old = time.time() - 3600
    os.utime(rd.lock_file, (old, old))
    assert rd.acquire_lock() and json.loads(rd.lock_file.read_text())["pid"] == os.getpid()


def test_a_dead_holders_lock_is_broken_where_flock_is_unsupported(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    atomic_write_json(rd.lock_file, {"host": socket.gethostname(), "pid": dead_pid(), "time": time.time()})

    def no_flock(*args):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    monkeypatch.setattr(atomic.fcntl, "flock", no_flock)
    assert rd.acquire_lock() and json.loads(rd.lock_file.read_text())["pid"] == os.getpid()
    assert not rd.acquire_lock()                     # held by a live process: this one


# ---------------------------------------------------------------------------------------------
# full disk
# ---------------------------------------------------------------------------------------------
def folder_bytes(root: Path) -> int:
    """Bytes used under root (hard links counted once, as a file system does)."""
    seen = {}
    for p in Path(root).rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_file():
            seen[st.st_ino] = st.st_size
    return sum(seen.values())


def assert_out_of_space_reported(caplog, capsys, rd: RunDir, results: Path) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors               # one line
    assert "out of disk space" in errors[0] and str(rd.path) in errors[0]    # naming the folder
    assert "Traceback" not in capsys.readouterr().err
    assert temp_files(results) == []                                        # no debris
    assert not rd.lock_file.exists() and not rd.done_file.exists()
    assert rd.state() == "stale"                                            # interrupted, never "running"
    assert [r["state"] for r in orchestrate.collect_status(results)] == ["stale"]


def test_disk_full_simulated(tmp_path, fault_spec, clean, monkeypatch, caplog, capsys):
    """Every write under the results folder goes through dgbench.rundir; give it a disk of half
    the size a run needs (portable: no mount needed)."""
    results, quota, full = tmp_path / "results", folder_bytes(clean.path) // 2, [True]
    real_open = builtins.open

    class Quota:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            room = quota - folder_bytes(results)
            if len(data) > room:
                self.f.write(data[: max(room, 0)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def open_(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return Quota(f) if full[0] and set(mode) & set("wa") and str(file).startswith(str(results)) else f
    monkeypatch.setattr(rundir, "open", open_, raising=False)
    caplog.set_level(logging.ERROR, logger="dgbench")
    assert execute(fault_spec, results, progress=False) == "interrupted"
    rd = RunDir.for_run(results, fault_spec.run_id)
    assert_out_of_space_reported(caplog, capsys, rd, results)
    full[0] = False                                                         # space freed
    assert execute(fault_spec, results, progress=False) == "done"
    assert_same_results(rd, clean)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs (the simulated one runs everywhere)")
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"mount -t tmpfs failed here: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_on_a_600k_tmpfs(tmp_path, fault_spec, clean, caplog, capsys):
    with tmpfs(tmp_path / "small", "600k") as results:
        caplog.set_level(logging.ERROR, logger="dgbench")
        assert execute(fault_spec, results, progress=False) == "interrupted"
        rd = RunDir.for_run(results, fault_spec.run_id)
        assert_out_of_space_reported(caplog, capsys, rd, results)
        subprocess.run(["mount", "-o", "remount,size=64m", str(results)], check=True)
        assert execute(fault_spec, results, progress=False) == "done"
        assert_same_results(rd, clean)


# ---------------------------------------------------------------------------------------------
# edited run folders, unknown names, bad options, strict JSON
# ---------------------------------------------------------------------------------------------
def test_edited_spec_is_refused_by_bench_tables_status_and_resume(tmp_path, fault_spec, clean, capsys):
    from dgbench.report import write_tables
    results = tmp_path / "results"
    shutil.copytree(clean.path.parent.parent, results)
    rd = RunDir.for_run(results, fault_spec.run_id)
    data = json.loads(rd.spec_file.read_text())
    data["spec"]["method"] = "maskgen"                      # ERM's results, labelled MaskGen
    rd.spec_file.write_text(json.dumps(data))
    mtime = rd.metrics_file.stat().st_mtime_ns
    fix = "restore the original spec.json, or move"
    assert main(BENCH + ["--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "No finished runs to tabulate" in out and "| maskgen" not in out
    assert f"{rd.spec_file}: the spec hashes to run id" in out and fix in out
    out_dir = write_tables(results, tmp_path / "tables", figures=False)
    main_md = (tmp_path / "tables" / "main.md").read_text()
    assert out_dir["tables"] and "| maskgen" not in main_md
    assert "invalid" in main_md and "No missing or failed runs" not in main_md
    (row,) = orchestrate.collect_status(results)
    assert (row["state"], row["method"]) == ("invalid", "erm") and fix in row["error"]
    assert main(["run", str(rd.path)]) == 2
    assert "spec.json was edited" in capsys.readouterr().err
    assert execute(fault_spec, results, progress=False) == "invalid"
    assert rd.metrics_file.stat().st_mtime_ns == mtime and json.loads(rd.spec_file.read_text()) == data
    shutil.move(rd.path, tmp_path / "set-aside")            # the fix the message gives
    assert main(BENCH + ["--results", str(results)]) == 0
    assert_same_results(rd, clean)


def test_unknown_method_names_in_hparam_keys(tmp_path, folder_root, capsys):
    results = str(tmp_path / "results")
    assert main(["bench", "--dataset", "folder", "--method", "erm", "--seeds", "0", "--results", results,
                 "--hparam", "maskgne.p=0.5"]) == 2
    assert "'maskgne' is not a method of this bench (erm)" in capsys.readouterr().err
    for extra in ([], ["--dry-run"]):
        assert main(["sweep", "--datasets", "folder", "--methods", "erm", "--results", results,
                     "--hparam", "maskgne.p=0.5", *extra]) == 2
        assert "'maskgne' is not a method of this sweep (erm)" in capsys.readouterr().err   # bench's parser
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("datasets: folder\nmethods: erm\ngrids:\n  - methods: erm\n    hparams: {maskgen: {p: 0.5}}\n")
    assert main(["sweep", "--file", str(sweep), "--results", results, "--dry-run"]) == 2
    assert "['maskgen'] that the sweep (or the grid they are given in) does not run" in capsys.readouterr().err
    assert main(["bench", "--dataset", "folder", "--method", "erm", "--seeds", "0", "--results", results,
                 "--hparam", "erm.p=0.5"]) == 2                          # a known method, an unknown key
    assert "unknown hyperparameter(s) ['p']" in capsys.readouterr().err
    assert not Path(results).exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", "-5"], "steps must be a whole number >= 1, got -5"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1, got 0"),
    (["--train", "val_every=0"], "val_every must be a whole number >= 1, got 0"),
    (["--train", "ckpt_every=-1"], "ckpt_every must be a whole number >= 1, got -1"),
    (["--train", "patch_size=[18,18,18]"], "needs sides that are multiples of 4 and at least 8"),
    (["--train", "aug_prob=1.5"], "aug_prob is a probability in [0, 1], got 1.5"),
    (["--train", "lr=0"], "lr must be a positive number, got 0.0"),
])
def test_bad_training_options_are_refused(tmp_path, folder_root, capsys, args, message):
    argv = ["bench", "--dataset", "folder", "--method", "erm", "--versus", "none", "--seeds", "0",
            "--results", str(tmp_path), "--train", "backbone_kwargs={width: 4, levels: 2}", *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_every_json_written_is_strict(tmp_path, fault_spec, clean, monkeypatch):
    atomic_write_json(tmp_path / "x.json", {"best": float("-inf"), "v": [float("nan"), 1.5]})
    assert strict_json(tmp_path / "x.json") == {"best": None, "v": [None, 1.5]}
    for path in clean.path.rglob("*.json"):
        strict_json(path)
    monkeypatch.setattr(Trainer, "validate", lambda self: float("nan"))      # no validation ever scores
    assert execute(fault_spec, tmp_path, progress=False) == "done"
    done = strict_json(RunDir.for_run(tmp_path, fault_spec.run_id).done_file)
    assert done["best_val_dice"] is None and done["best_step"] == -1
