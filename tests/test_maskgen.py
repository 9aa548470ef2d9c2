"""MaskGen: channel masking statistics, no masking at inference, a frozen extractor that stays
in eval mode through training and validation, and the ablations' channel semantics."""
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_TRAIN, folder_digest, method_context, tiny_synth_run
from dgbench.registry import METHODS
from dgbench.rundir import RunDir
from dgbench.spec import resolve
from dgbench.train import Trainer


def make(name, amp_dtype=None, **hp):
    return METHODS.get(name)(hp, method_context(amp_dtype=amp_dtype))


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
    """The frozen extractor runs under the loop's train.amp (`ctx.amp_dtype`), not a fixed
    bf16-on-CUDA rule."""
    from dgbench.amp import amp_dtype_for
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype_for("bf16", cpu) is amp_dtype_for("bf16", cuda) is amp_dtype_for("auto", cuda) is torch.bfloat16
    assert amp_dtype_for("fp32", cpu) is amp_dtype_for("fp32", cuda) is amp_dtype_for("auto", cpu) is None
    x = torch.rand(1, 1, 32, 32, 32)
    for amp_dtype, want in ((torch.bfloat16, torch.bfloat16), (None, torch.float32)):
        m = make("maskgen", amp_dtype=amp_dtype)
        seen = []
        m.extractor.register_forward_hook(lambda mod, inputs, out: seen.append(out.dtype))
        assert m.features(x).dtype == torch.float32                  # instance-normalised in fp32 either way
        assert seen == [want], amp_dtype


def test_input_diagnostic_reproduces_the_saved_score_and_changes_nothing(tmp_path, synth_prepared, capsys):
    """benchmarks/maskgen_inputs.py on a trained tiny MaskGen run: its first column is the run's
    own best source-val Dice (the same evaluation path), every column is a Dice, and the run
    folder is left as it was."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import maskgen_inputs
    rd, tr = tiny_synth_run(tmp_path, "maskgen")
    before = folder_digest(rd.path)
    capsys.readouterr()
    assert maskgen_inputs.main([str(rd.path), "--batches", "2", "--val-cases", "1"]) == 0
    cells = [c.strip() for c in capsys.readouterr().out.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[0] == rd.path.name and len(cells) == 6
    assert all(0.0 <= float(c) <= 100.0 for c in cells[1:])
    assert float(cells[1]) == pytest.approx(100 * tr.best_val, abs=0.051)
    assert folder_digest(rd.path) == before


def test_input_diagnostic_names_a_missing_checkpoint(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import maskgen_inputs
    assert maskgen_inputs.main([str(tmp_path / "synth_maskgen_full_s0_0000000000")]) == 2
    err = capsys.readouterr().err
    assert "synth_maskgen_full_s0_0000000000/checkpoints/best.pt: no such checkpoint" in err
    assert "run the run to the end first" in err
