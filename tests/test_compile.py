"""train.compile on a CPU. torch.compile's inductor builds C++ kernels: one test runs real
inductor training steps on a tiny net (about 20 s cold on a busy core; its cache makes later
runs fast); the loop's compile path (Trainer, checkpoints) runs with the aot_eager backend,
which captures the same graphs without generating code, in seconds."""
import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from conftest import TINY_TRAIN
from dgbench import accel
from dgbench.rundir import RunDir
from dgbench.spec import resolve
from dgbench.train import Trainer, step_seed

CPU = torch.device("cpu")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(1, 4, 3, padding=1, bias=False)   # a bias before a norm has noise for gradient
        self.norm = nn.InstanceNorm3d(4, affine=True)
        self.b = nn.Conv3d(4, 3, 1)

    def forward(self, x):
        return self.b(nn.functional.leaky_relu(self.norm(self.a(x)), 0.01))


@pytest.mark.skipif(accel.cxx_compiler() is None,
                    reason="no C++ compiler (g++, c++ or clang++; or set CXX): inductor cannot build CPU kernels")
def test_inductor_steps_give_the_eager_losses(monkeypatch):
    import torch._inductor.config as inductor
    monkeypatch.delenv("DGBENCH_COMPILE_BACKEND", raising=False)
    monkeypatch.setattr(inductor, "compile_threads", 1)       # no worker pool to start on a busy machine
    torch.manual_seed(0)
    eager, comp = Tiny(), Tiny()
    comp.load_state_dict(eager.state_dict())
    fast = accel.compiled(comp)                 # what the loop trains through
    assert list(comp.state_dict()) == list(eager.state_dict())
    loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (eager, comp)]
    g = torch.Generator().manual_seed(1)
    try:
        for step in range(3):
            x = torch.rand(2, 1, 8, 8, 8, generator=g)
            y = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g)
            values = []
            for m, opt in zip((eager, comp), opts):
                opt.zero_grad()
                v = loss((fast if m is comp else m)(x), y)
                v.backward()
                opt.step()
                values.append(v.item())
            assert values[1] == pytest.approx(values[0], rel=1e-4, abs=1e-6), step
        for a, b in zip(eager.parameters(), comp.parameters()):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1          # it really compiled
    finally:
        torch._dynamo.reset()


def test_the_loop_compiles_in_place_and_checkpoints_stay_plain(tmp_path, synth_prepared, monkeypatch):
    monkeypatch.setenv("DGBENCH_COMPILE_BACKEND", "aot_eager")
    train = {**TINY_TRAIN, "patch_size": [8, 8, 8], "backbone_kwargs": {"width": 2, "levels": 1}}
    eager = Trainer(resolve("synth", "erm", train={**train, "compile": "off"}), RunDir(tmp_path / "e"),
                    device=CPU, progress=False)
    comp = Trainer(resolve("synth", "erm", train={**train, "compile": "on"}), RunDir(tmp_path / "c"),
                   device=CPU, progress=False)
    assert comp.compiled and not eager.compiled
    assert comp.train_net is not comp.net and eager.train_net is eager.net           # eager net kept for the rest
    keys = list(eager.net.state_dict())
    assert list(comp.net.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    try:
        for step in range(2):
            batch = torch.utils.data.default_collate([eager.data[2 * step + i] for i in range(2)])
            losses = []
            for t in (eager, comp):
                torch.manual_seed(step_seed(0, step))
                losses.append(float(t.train_step(*t.batch_to_device(batch))))
            assert losses[1] == pytest.approx(losses[0], rel=1e-5), step
        # a compiled run's checkpoint is an eager run's, and back
        comp.rd.path.mkdir(parents=True, exist_ok=True)
        comp.save(comp.rd.path / "ck.pt")
        eager.net.load_state_dict(eager.read_checkpoint(comp.rd.path / "ck.pt")["model"])
        comp.net.load_state_dict(eager.net.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(eager.net.parameters(), comp.net.parameters()))
    finally:
        torch._dynamo.reset()
