"""The fast training path's switches on a CPU: run ids that do not move, train.compile and
train.aug_on resolution and errors, exact resume with the augmentation on the device, and a
training step that reads nothing back from the device."""
import csv
import json

import pytest
import torch

from conftest import TINY_TRAIN, method_context
from dgbench import accel
from dgbench.rundir import RunDir
from dgbench.spec import RunSpec, TrainConfig, resolve
from dgbench.train import Trainer, execute, pick_augmentation

CPU = torch.device("cpu")


def test_existing_run_ids_do_not_move():
    """Ids written before train.compile / train.aug_on existed (450 steps was synth's default
    then; results/budget holds the second), and the embedded table's (results/embedded)."""
    assert resolve("synth", "erm", train={"steps": 450}).run_id == "synth_erm_full_s0_88a290c38e"
    assert resolve("synth", "erm", train={"steps": 3000}).run_id == "synth_erm_full_s0_48727e2b9c"
    assert resolve("synth", "maskgen", seed=2, train={"steps": 450}).run_id == "synth_maskgen_full_s2_ef11d2bd79"
    assert resolve("synth", "erm").run_id == "synth_erm_full_s0_b572734acc"
    spec = resolve("synth", "erm")
    assert "compile" not in spec.to_dict()["train"] and "aug_on" not in spec.to_dict()["train"]
    assert RunSpec.from_dict(spec.to_dict()).train.compile == "auto"
    # an explicit choice is a different run, and survives the round trip through spec.json
    on = resolve("synth", "erm", train={"aug_on": "device"})
    assert on.run_id != spec.run_id and RunSpec.from_dict(on.to_dict()).run_id == on.run_id
    assert resolve("synth", "erm", train={"compile": "off"}).run_id != spec.run_id


def test_options_resolve_per_device_and_refuse_clearly(monkeypatch):
    assert TrainConfig.from_dict({"compile": True}).compile == "on"        # YAML's on/off are booleans
    assert TrainConfig.from_dict({"compile": False}).compile == "off"
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        resolve("synth", "erm", train={"compile": "fast"})
    with pytest.raises(ValueError, match="aug_on must be one of auto, cpu, device"):
        resolve("synth", "erm", train={"aug_on": "gpu"})
    assert accel.augment_on("auto", CPU) == "cpu" and accel.augment_on("auto", torch.device("cuda")) == "device"
    assert accel.augment_on("device", CPU) == "device"
    assert accel.use_compile("auto", CPU) is False and accel.use_compile("off", torch.device("cuda")) is False
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(accel.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"train.compile=on cannot run on cpu: no C\+\+ compiler.*compile=off"):
        accel.use_compile("on", CPU)


def test_methods_with_their_own_pipelines_keep_the_cpu_path():
    from dgbench.registry import DATASETS, METHODS
    adapter = DATASETS.get("synth")()
    for name, where in (("erm", "device"), ("synthseg", "device"), ("heavyaug", "cpu"), ("bigaug", "cpu")):
        cfg = TrainConfig.from_dict({**adapter.train_defaults, "aug_on": "auto"})
        method = METHODS.get(name)(None, method_context(adapter.n_classes, adapter.sided, cfg.patch_size,
                                                        cfg.aug_prob))
        got, aug, transforms = pick_augmentation(method, cfg, False, 0, torch.device("cuda"))  # "auto" on CUDA
        assert got == where, name
        assert (aug is None) == (where == "cpu") and (transforms is None) == (where == "device")
        if name == "synthseg":               # its hook keeps only the geometric ops, on the device too
            assert [type(op).__name__ for op in aug.ops] == ["Flip", "Flip", "Rot90", "Affine"]
        if where == "cpu":
            explicit = TrainConfig.from_dict({**adapter.train_defaults, "aug_on": "device"})
            with pytest.raises(ValueError, match="train.aug_on=device: .* no device port .*aug_on=cpu"):
                pick_augmentation(method, explicit, False, 0, CPU)


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def one_eval_case(monkeypatch):
    """Evaluate one validation case only: training is under test here, the evaluator is not."""
    import dgbench.train as train
    from dgbench.registry import DATASETS
    keep = DATASETS.get("synth")().split().val[0]
    real = train.evaluate_cases
    monkeypatch.setattr(train, "evaluate_cases", lambda net, method, prepared, cases, *a, **k:
                        real(net, method, prepared, [c for c in cases if c[1] == keep], *a, **k))


def test_device_augmentation_run_resumes_exactly(tmp_path, synth_prepared, one_eval_case):
    spec = resolve("synth", "erm", seed=4, train={**TINY_TRAIN, "aug_on": "device"})
    assert execute(spec, tmp_path / "clean", progress=False) == "done"
    clean = RunDir.for_run(tmp_path / "clean", spec.run_id)
    assert "augmentation on device" in clean.log_file.read_text()
    done = json.loads(clean.done_file.read_text())
    assert done["aug_on"] == "device" and done["compile"] is False
    orig = Trainer.train_step

    def step(self, x, y):                     # stopped as it starts step 5 (checkpoint at step 3)
        if self.step == 4:
            raise KeyboardInterrupt
        return orig(self, x, y)
    Trainer.train_step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(spec, tmp_path / "resumed", progress=False)
    finally:
        Trainer.train_step = orig
    assert execute(spec, tmp_path / "resumed", progress=False) == "done"
    rd = RunDir.for_run(tmp_path / "resumed", spec.run_id)
    assert "resumed from step 3" in rd.log_file.read_text()
    assert rd.train_loss.read_text() == clean.train_loss.read_text()
    assert len(read(rd.train_loss)) == TINY_TRAIN["steps"]
    assert rd.val_history.read_text() == clean.val_history.read_text()
    assert [r["dice"] for r in read(rd.metrics_file)] == [r["dice"] for r in read(clean.metrics_file)]
    # and it is another sample stream than the CPU path's
    cpu = resolve("synth", "erm", seed=4, train={**TINY_TRAIN, "aug_on": "cpu"})
    assert execute(cpu, tmp_path / "cpu", progress=False) == "done"
    assert RunDir.for_run(tmp_path / "cpu", cpu.run_id).train_loss.read_text() != clean.train_loss.read_text()


class OnDevice(torch.Tensor):
    """Stands for device memory on a CPU: every value computed from it is one too, and each
    read of one on the host is recorded (on CUDA each such read waits for the queue to drain)."""
    reads: list = []

    def item(self):
        OnDevice.reads.append("item")
        return super().item()

    def tolist(self):
        OnDevice.reads.append("tolist")
        return super().tolist()

    def __bool__(self):
        OnDevice.reads.append("bool")
        return super().__bool__()

    def __float__(self):
        OnDevice.reads.append("float")
        return super().__float__()

    def __int__(self):
        OnDevice.reads.append("int")
        return super().__int__()


@pytest.mark.parametrize("name", ["erm", "maskgen"])
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, synth_prepared, name):
    """Device augmentation (every op firing), the method's hooks and the optimiser step: no value
    computed from the batch comes back to the host; the loop reads the losses once per
    validation or checkpoint (test_device_augmentation_run_resumes_exactly checks their values)."""
    spec = resolve("synth", name, train={**TINY_TRAIN, "aug_on": "device", "aug_prob": 1.0})
    trainer = Trainer(spec, RunDir(tmp_path), device=CPU, progress=False)
    batch = torch.utils.data.default_collate([trainer.data[k] for k in range(2)])
    batch["image"], batch["label"] = batch["image"].as_subclass(OnDevice), batch["label"].as_subclass(OnDevice)
    OnDevice.reads.clear()
    x, y = trainer.batch_to_device(batch)
    loss = trainer.train_step(x, y)
    assert isinstance(loss, OnDevice) and not loss.requires_grad
    assert OnDevice.reads == []
    float(loss)                                   # the probe itself works
    assert OnDevice.reads == ["float"]


def test_a_non_finite_loss_names_its_step(tmp_path, synth_prepared, monkeypatch, one_eval_case):
    spec = resolve("synth", "erm", train=TINY_TRAIN)
    orig = Trainer.train_step

    def step(self, x, y):
        loss = orig(self, x, y)
        return loss * float("nan") if self.step == 1 else loss      # step 2 goes bad, read at step 3
    monkeypatch.setattr(Trainer, "train_step", step)
    assert execute(spec, tmp_path, progress=False) == "failed"
    info = json.loads(RunDir.for_run(tmp_path, spec.run_id).failed_file.read_text())
    assert info["error"].startswith("FloatingPointError: loss is nan at step 2;")
