"""MaskGen: channel masking statistics, no masking at inference, a frozen extractor that stays
in eval mode through training and validation, and the ablations' channel semantics."""
import pytest
import torch

from conftest import TINY_TRAIN
from dgbench.registry import METHODS
from dgbench.rundir import RunDir
from dgbench.spec import resolve
from dgbench.train import Trainer


def make(name, **hp):
    return METHODS.get(name)(hp)


def test_masking_statistics_and_rescale():
    m = make("maskgen", p=0.75)
    torch.manual_seed(0)
    mult = m.channel_mask(4000, 17, "cpu")[:, :, 0, 0, 0]
    zeroed = (mult == 0).float()
    assert zeroed.mean().item() == pytest.approx(0.75, abs=0.01)
    assert zeroed[:, 0].mean().item() == pytest.approx(0.75, abs=0.03)      # intensity masked like the rest
    assert set(mult.unique().tolist()) == {0.0, 4.0}                        # survivors x 1/(1-p)
    per_sample = zeroed.mean(1)
    assert per_sample.std().item() > 0.05                                   # drawn per sample, not per batch
    nr = make("maskgen-norescale").channel_mask(100, 17, "cpu")
    assert set(nr.unique().tolist()) == {0.0, 1.0}


def test_mask_groups():
    torch.manual_seed(1)
    f = make("maskgen", mask_on="features").channel_mask(500, 17, "cpu")[:, :, 0, 0, 0]
    assert (f[:, 0] == 1.0).all() and (f[:, 1:] == 0).float().mean() == pytest.approx(0.75, abs=0.03)
    i = make("maskgen-imgonly-mask").channel_mask(500, 17, "cpu")[:, :, 0, 0, 0]
    assert (i[:, 1:] == 1.0).all() and (i[:, 0] == 0).float().mean() == pytest.approx(0.75, abs=0.06)


def test_whole_channels_in_training_none_at_inference():
    m = make("maskgen")
    x = torch.rand(3, 1, 32, 32, 32)
    torch.manual_seed(0)
    z, _ = m.train_batch(None, x, None)
    full = m.infer_input(x)
    assert z.shape == full.shape == (3, 17, 32, 32, 32)
    assert torch.allclose(full[:, :1], x)                                   # intensity first, unscaled
    flat = z.flatten(2)
    zero = (flat == 0).all(-1)
    kept = ~zero
    assert zero.any() and kept.any()
    assert torch.allclose(flat[kept], 4 * full.flatten(2)[kept])            # kept channels x4, whole patch
    # features are instance-normalised per patch and channel
    assert full[:, 1:].mean(dim=(2, 3, 4)).abs().max() < 1e-4


def test_ablation_channels():
    x = torch.rand(2, 1, 32, 32, 32)
    fo = make("features-only")
    z, _ = fo.train_batch(None, x, None)
    assert (z[:, 0] == 0).all() and (fo.infer_input(x)[:, 0] == 0).all()
    assert not (z[:, 1:] == 0).flatten(2).all(-1).any()                      # no masking
    c = make("concat")
    assert torch.equal(c.train_batch(None, x, None)[0], c.infer_input(x))
    with pytest.raises(ValueError, match="p must be in"):
        make("maskgen", p=1.0)


def test_extractor_frozen_and_eval_after_training_and_validation(tmp_path, synth_prepared):
    spec = resolve("synth", "maskgen", seed=0, train={**TINY_TRAIN, "steps": 3, "val_every": 2})
    tr = Trainer(spec, RunDir(tmp_path / "run"), progress=False)
    ext = tr.method.extractor
    before = {k: v.clone() for k, v in ext.net.state_dict().items()}
    tr.fit()                                    # includes a validation at step 2 and one at 3
    tr.net.train()                              # what the reference's validation did last
    ext.train(True)
    assert not ext.training
    assert all(not m.training for m in ext.modules())
    assert all(not p.requires_grad for p in ext.parameters())
    after = ext.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)            # running stats untouched
    opt_params = {id(p) for g in tr.opt.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in ext.parameters()}
    ckpt = torch.load(tr.rd.last_ckpt, weights_only=False)
    assert sum(p.numel() for p in tr.net.parameters()) == sum(v.numel() for k, v in ckpt["model"].items()
                                                             if "running" not in k and "num_batches" not in k)
    assert tr.net.stem[0].in_channels == 17


def test_extractor_precision_follows_the_recipe_amp():
    """The frozen extractor runs under the loop's train.amp, not a fixed bf16-on-CUDA rule."""
    from dgbench.method import MethodContext
    from dgbench.spec import TrainConfig
    x = torch.zeros(1, 1, 8, 8, 8)
    for amp, dtype in (("bf16", torch.bfloat16), ("fp32", None), ("auto", None)):   # "auto" on a CPU: fp32
        m = METHODS.get("maskgen")({}, MethodContext(None, TrainConfig(amp=amp), torch.device("cpu")))
        assert m._amp(x) is dtype, amp
    assert make("maskgen")._amp(x) is None                                        # no recipe: "auto"
