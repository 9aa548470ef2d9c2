"""The training loop and run folders: files, idempotence, failures. Kills, interrupts and other
faults, with exact resume, are in tests/faults/."""
import csv
import json
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY_TRAIN, interrupted_run
from dgbench.evaluate import mean_dice
from dgbench.rundir import METRIC_COLUMNS, RunDir
from dgbench.selection import ORACLE, final_metrics
from dgbench.spec import RunSpec, resolve
from dgbench.train import Trainer, execute


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
    # synth's split has no target-val cases: no oracle checkpoint, column or rows, and the log says so
    assert not rd.oracle_ckpt.exists() and rd.val_history.read_text().startswith("step,loss,val_dice\n")
    assert "no target-val cases in the split: no oracle checkpoint" in rd.log_file.read_text()
    assert "best_target_val_step" not in json.loads(rd.done_file.read_text())
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
    from dgbench.cli_args import parse_kv
    assert parse_kv("lr=1e-3") == ("lr", 1e-3)                # YAML alone would keep "1e-3" a string
    assert parse_kv("patch_size=[64, 64, 64]") == ("patch_size", [64, 64, 64])
    assert resolve("synth", "erm", train={"lr": "1e-3", "steps": "12"}).train.lr == 1e-3
    with pytest.raises(ValueError, match="training option lr must be a number"):
        resolve("synth", "erm", train={"lr": "fast"})


# -- the oracle: target-val selection (dgbench.selection) ------------------------------------
# The tiny `folder` dataset of tests/test_datasets.make_folder: its split has one target-val case
# (siteB). Checkpoints at steps 2, 4, 6; validations at 3 and 6.
ORACLE_TRAIN = {**TINY_TRAIN, "ckpt_every": 2}


@pytest.fixture(scope="module")
def folder_env(tmp_path_factory, tiny_folder_env):
    """Environment of the tiny folder dataset (tests/conftest.py; tests set it only while they
    run) and a clean, never interrupted run on it."""
    env = tiny_folder_env
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        spec = resolve("folder", "erm", seed=0, train=ORACLE_TRAIN)
        results = tmp_path_factory.mktemp("oracle") / "clean"
        assert execute(spec, results, progress=False) == "done"
    return env, spec, RunDir.for_run(results, spec.run_id)


def use(env, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def val_history(rd: RunDir) -> list[dict]:
    with open(rd.val_history) as f:
        return list(csv.DictReader(f))


def test_oracle_checkpoint_history_and_rows(folder_env, monkeypatch):
    env, spec, rd = folder_env
    use(env, monkeypatch)
    hist = val_history(rd)
    assert rd.val_history.read_text().startswith("step,loss,val_dice,target_val_dice\n")
    assert [int(r["step"]) for r in hist] == [3, 6]
    scores = [float(r["target_val_dice"]) for r in hist]
    best = int(hist[scores.index(max(scores))]["step"])            # ties keep the earlier step
    done = json.loads(rd.done_file.read_text())
    assert done["best_target_val_step"] == best and done["best_target_val_dice"] == pytest.approx(max(scores), abs=1e-6)
    assert torch.load(rd.oracle_ckpt, weights_only=False)["step"] == best
    last = torch.load(rd.last_ckpt, weights_only=False)
    assert last["best_target_val_step"] == best and last["best_target_val"] == pytest.approx(max(scores), abs=1e-6)
    log = rd.log_file.read_text()
    assert "target-val: 1 target cases scored at every validation" in log
    # both scores and times per validation; the interval keeps its meaning (benchmarks/gpu_check.py)
    assert re.search(r"step 6/6 loss \S+ val_dice \S+ target_val_dice \S+ \(source-val [\d.]+ s, target-val "
                     r"\(oracle\) [\d.]+ s\) \([\d.]+ s since last validation\)", log), log
    rows = read_metrics(rd)
    assert {r["selection"] for r in rows} == {"last", "source-val", ORACLE}
    oracle = [r for r in rows if r["selection"] == ORACLE]
    assert {r["split"] for r in oracle} == {"val", "test", "target-val"}
    assert {r["domain"] for r in oracle if r["split"] == "target-val"} == {"siteB"}
    # the oracle's target-val rows are the selected weights scored by the one evaluation path
    tv = [{"class": int(r["class"]), "dice": float(r["dice"]) if r["dice"] else float("nan"),
           "gt_present": r["gt_present"] == "True"} for r in oracle if r["split"] == "target-val"]
    assert mean_dice(tv) == pytest.approx(max(scores), abs=1e-5)


def test_target_val_scoring_never_changes_training(folder_env, monkeypatch, tmp_path):
    """The same run with the target-val cases hidden from the loop: identical losses, source-val
    history, selection and metrics (fails if the oracle's validation touched the weights, the
    optimiser, the random state of the next steps or the source-val selection)."""
    env, spec, rd = folder_env
    use(env, monkeypatch)
    orig = Trainer.__init__

    def without_target_val(self, *a, **k):
        orig(self, *a, **k)
        self.target_val_cases = []
    monkeypatch.setattr(Trainer, "__init__", without_target_val)
    assert execute(spec, tmp_path, progress=False) == "done"
    bare = RunDir.for_run(tmp_path, spec.run_id)
    assert bare.train_loss.read_text() == rd.train_loss.read_text()
    assert [(r["step"], r["loss"], r["val_dice"]) for r in val_history(bare)] == \
           [(r["step"], r["loss"], r["val_dice"]) for r in val_history(rd)]
    key = lambda rows: [(r["selection"], r["split"], r["case"], r["class"], r["dice"]) for r in rows
                        if r["selection"] != ORACLE and r["split"] != "target-val"]
    assert key(read_metrics(bare)) == key(read_metrics(rd))
    done, done_bare = (json.loads(r.done_file.read_text()) for r in (rd, bare))
    assert done_bare["best_step"] == done["best_step"] and done_bare["best_val_dice"] == done["best_val_dice"]
    # and without target-val cases: no oracle checkpoint, column or rows; the log says so
    assert not bare.oracle_ckpt.exists() and bare.val_history.read_text().startswith("step,loss,val_dice\n")
    assert {r["selection"] for r in read_metrics(bare)} == {"last", "source-val"}
    assert "no target-val cases in the split" in bare.log_file.read_text()


def test_oracle_state_resumes_exactly(folder_env, monkeypatch, tmp_path):
    env, spec, clean = folder_env
    use(env, monkeypatch)
    rd = RunDir.for_run(tmp_path, spec.run_id)
    interrupted_run(spec, tmp_path, 3)       # after the step-3 validation wrote its row and oracle file;
    assert rd.oracle_ckpt.exists() and [r["step"] for r in val_history(rd)] == ["3"]   # last.pt: step 2
    interrupted_run(spec, tmp_path, 5)       # resumed from step 2; stopped with last.pt at step 4
    t = Trainer(spec, rd, progress=False)
    assert t.resume() and t.step == 4
    step3 = val_history(rd)[0]
    assert (t.best_tv_step, t.best_tv) == (3, pytest.approx(float(step3["target_val_dice"]), abs=1e-6))
    assert execute(spec, tmp_path, progress=False) == "done"
    assert rd.val_history.read_text() == clean.val_history.read_text()
    assert rd.train_loss.read_text() == clean.train_loss.read_text()
    assert read_metrics(rd) == read_metrics(clean)
    done, done_clean = (json.loads(r.done_file.read_text()) for r in (rd, clean))
    assert (done["best_target_val_step"], done["best_target_val_dice"]) == \
           (done_clean["best_target_val_step"], done_clean["best_target_val_dice"])
    a, b = (torch.load(r.oracle_ckpt, weights_only=False)["model"] for r in (rd, clean))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class FakeTrainer:
    """What dgbench.selection.final_metrics reads of a Trainer; records whose weights it evaluates."""

    def __init__(self, path, step, best_step, best_tv_step, target_val=True):
        self.rd, self.step, self.best_step, self.best_tv_step = RunDir(path), step, best_step, best_tv_step
        self.split = SimpleNamespace(val=["v1"], test={"d": ["t1", "t2"]})
        self.target_val_cases = [("target-val", "tv1")] if target_val else []
        self.spec = SimpleNamespace(run_id="r", dataset="x", method="erm", setting="full", seed=0)
        self.progress, self.weights, self.evaluated = False, "last", []
        self.net = SimpleNamespace(load_state_dict=lambda sd: setattr(self, "weights", sd))

    def read_checkpoint(self, path):
        return {"model": path.name}

    def evaluate(self, cases, keep_predictions=None, progress=False, desc=""):
        self.evaluated.append(self.weights)
        return [{"split": s, "case": c, "class": 1, "weights": self.weights} for s, c in cases], {}


@pytest.mark.parametrize("step,best,best_tv,evaluated,oracle_weights", [
    (6, 3, 6, ["last", "best.pt"], "last"),                          # oracle = last: reuses its rows
    (6, 3, 3, ["last", "best.pt"], "best.pt"),                       # oracle = source-val: reuses those
    (6, 6, 3, ["last", "oracle_target_val.pt"], "oracle_target_val.pt"),
    (9, 3, 6, ["last", "best.pt", "oracle_target_val.pt"], "oracle_target_val.pt"),
    (6, -1, -1, ["last"], "last"),                                   # nothing scored: the last weights
])
def test_final_metrics_evaluates_each_weights_once(tmp_path, step, best, best_tv, evaluated, oracle_weights):
    t = FakeTrainer(tmp_path, step, best, best_tv)
    rows = final_metrics(t)
    assert t.evaluated == evaluated
    oracle = [r for r in rows if r["selection"] == ORACLE]
    assert len(oracle) == 4 and {r["weights"] for r in oracle} == {oracle_weights}
    assert {r["split"] for r in oracle} == {"val", "test", "target-val"}
    assert len(rows) == 3 * 4


def test_final_metrics_without_target_val_has_no_oracle_rows(tmp_path):
    t = FakeTrainer(tmp_path, 9, 3, -1, target_val=False)
    rows = final_metrics(t)
    assert t.evaluated == ["last", "best.pt"] and {r["selection"] for r in rows} == {"last", "source-val"}
    assert {r["split"] for r in rows} == {"val", "test"}
