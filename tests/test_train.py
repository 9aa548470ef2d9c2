"""The training loop and run folders: files, idempotence, failures. Kills, interrupts and other
faults, with exact resume, are in tests/faults/."""
import csv
import json

import pytest

from conftest import TINY_TRAIN
from dgbench.rundir import METRIC_COLUMNS, RunDir
from dgbench.spec import RunSpec, resolve
from dgbench.train import execute


def read_metrics(rd: RunDir):
    with open(rd.metrics_file) as f:
        return list(csv.DictReader(f))


def test_run_writes_every_file_and_is_idempotent(tmp_path, synth_prepared):
    spec = resolve("synth", "erm", seed=0, train=TINY_TRAIN)
    assert execute(spec, tmp_path, progress=False) == "done"
    rd = RunDir.for_run(tmp_path, spec.run_id)
    for f in (rd.spec_file, rd.log_file, rd.heartbeat_file, rd.last_ckpt, rd.best_ckpt, rd.val_history,
              rd.train_loss, rd.metrics_file, rd.done_file):
        assert f.exists(), f
    assert not rd.lock_file.exists() and rd.state() == "done"
    assert RunSpec.from_dict(json.loads(rd.spec_file.read_text())["spec"]).run_id == spec.run_id
    rows = read_metrics(rd)
    assert list(rows[0]) == METRIC_COLUMNS
    split = synth_prepared.adapter.split()
    n_cases = len(split.val) + sum(len(v) for v in split.test.values())
    assert len(rows) == 2 * n_cases * 4                          # 2 selections x cases x 4 classes
    assert {r["selection"] for r in rows} == {"last", "source-val"}
    assert {r["domain"] for r in rows if r["split"] == "test"} == {"mri", "ct-scanner2", "ct-thick"}
    assert {r["domain"] for r in rows if r["split"] == "val"} == {"ct"}
    assert len(list((rd.path / "predictions").glob("*.npz"))) == 3
    with open(rd.val_history) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [3, 6]
    with open(rd.train_loss) as f:
        losses = list(csv.DictReader(f))
    assert [int(r["step"]) for r in losses] == [1, 2, 3, 4, 5, 6]
    with open(rd.val_history) as f:                              # val_history's loss: the interval means
        assert float(next(csv.DictReader(f))["loss"]) == pytest.approx(
            sum(float(r["loss"]) for r in losses[:3]) / 3, rel=1e-4)
    conv = json.loads(rd.done_file.read_text())["convergence"]
    assert conv["source"] == "train_loss" and conv["steps"] == conv["total_steps"] == 6
    assert isinstance(conv["converged"], bool) and conv["converged"] == (conv["reasons"] == [])
    assert "convergence: " in rd.log_file.read_text()            # the one-line verdict in the log
    mtime = rd.metrics_file.stat().st_mtime_ns
    assert execute(spec, tmp_path, progress=False) == "done"     # skipped: nothing rewritten
    assert rd.metrics_file.stat().st_mtime_ns == mtime


def test_run_id_is_stable_and_specific():
    a = resolve("synth", "erm", seed=1, train={"steps": 10})
    assert a.run_id == resolve("synth", "erm", seed=1, train={"steps": 10}).run_id
    assert a.run_id != resolve("synth", "erm", seed=2, train={"steps": 10}).run_id
    assert a.run_id != resolve("synth", "erm", seed=1, train={"steps": 11}).run_id
    assert a.run_id != resolve("synth", "erm", seed=1, setting="fewshot-3", train={"steps": 10}).run_id
    with pytest.raises(ValueError, match="unknown training option"):
        resolve("synth", "erm", train={"stepz": 3})
    with pytest.raises(Exception, match="few-shot subset of size 4"):
        resolve("synth", "erm", setting="fewshot-4")


def test_failure_is_recorded_with_traceback(tmp_path, synth_prepared, monkeypatch):
    from dgbench.train import Trainer

    def broken(self):
        raise RuntimeError("validation broke")
    monkeypatch.setattr(Trainer, "validate", broken)
    spec = resolve("synth", "erm", seed=0, train=TINY_TRAIN)
    assert execute(spec, tmp_path, progress=False) == "failed"
    rd = RunDir.for_run(tmp_path, spec.run_id)
    info = json.loads(rd.failed_file.read_text())
    assert info["error"] == "RuntimeError: validation broke" and "Traceback" in info["traceback"]
    assert rd.state() == "failed" and not rd.lock_file.exists()


def test_busy_run_is_not_trained_twice(tmp_path, synth_prepared):
    spec = resolve("synth", "erm", seed=0, train=TINY_TRAIN)
    rd = RunDir.for_run(tmp_path, spec.run_id)
    assert rd.acquire_lock()                                  # a live process (this one) holds it
    rd.beat(0)
    assert execute(spec, tmp_path, progress=False) == "busy"
    assert not rd.metrics_file.exists()


def test_numbers_from_the_command_line_are_numbers():
    from dgbench.orchestrate import parse_kv
    assert parse_kv("lr=1e-3") == ("lr", 1e-3)                # YAML alone would keep "1e-3" a string
    assert parse_kv("patch_size=[64, 64, 64]") == ("patch_size", [64, 64, 64])
    assert resolve("synth", "erm", train={"lr": "1e-3", "steps": "12"}).train.lr == 1e-3
    with pytest.raises(ValueError, match="training option lr must be a number"):
        resolve("synth", "erm", train={"lr": "fast"})
