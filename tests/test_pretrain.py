"""Procedural pretraining: data, loss, a short run, the CLI."""
import argparse
import json

import numpy as np
import pytest
import torch

from dgbench import pretrain as pt
from dgbench import procedural as pr
from dgbench.models import extractors as ex
from dgbench.models import weights




def test_label_maps_are_deterministic_and_in_range():
    a = pr.random_label_map(32, torch.Generator().manual_seed(3))
    b = pr.random_label_map(32, torch.Generator().manual_seed(3))
    c = pr.random_label_map(32, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for lab in (a, c):
        k = int(lab.max()) + 1
        assert 3 <= k <= 30
        assert torch.equal(torch.unique(lab), torch.arange(k))   # consecutive labels


def test_views_differ_but_share_geometry():
    g = torch.Generator().manual_seed(0)
    lab = pr.random_label_map(32, g)
    v1 = pr.render_view(lab, g, pr.corruption_chain(1))
    v2 = pr.render_view(lab, g, pr.corruption_chain(2))
    assert v1.shape == (1, 32, 32, 32) and torch.isfinite(v1).all()
    assert v1.min() >= 0 and 0.9 < v1.max() < 5
    assert not torch.allclose(v1, v2)


def test_supcon_prefers_label_aligned_embeddings():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (64,), generator=g)
    aligned = torch.nn.functional.one_hot(labels, 8).float() + 0.01 * torch.randn(64, 8, generator=g)
    rand = torch.randn(64, 8, generator=g)
    assert pt.supcon_loss(aligned, labels, 0.33) < pt.supcon_loss(rand, labels, 0.33)


def test_training_fits_one_batch(monkeypatch):
    # the same label maps and views every step: the loss must fall reliably within few steps
    cfg = pt.PretrainConfig(steps=16, sizes=(32,), ngf=4, lr=2e-3, n_locations=64)
    tr = pt.Pretrainer(cfg)
    labs, x, _ = pt.sample_batch(cfg, 0, tr.chains)
    monkeypatch.setattr(pt, "sample_batch", lambda *a: (labs, x, torch.Generator().manual_seed(0)))
    h = np.array([tr.train_step() for _ in range(16)])
    assert np.isfinite(h).all()
    assert h[-4:].mean() < h[:4].mean() - 0.2


def test_coarse_labels_mark_only_pure_cells():
    lab = torch.zeros(8, 8, 8, dtype=torch.long)
    lab[:4] = 1                     # a boundary between cells of a factor-4 grid
    lab[4, 0, 0] = 2                # one stray voxel makes its factor-4 cell impure
    coarse, pure = pt.coarse_labels(lab, 4)
    assert coarse.shape == pure.shape == (2, 2, 2)
    assert pure[0].all() and (coarse[0] == 1).all()
    assert not pure[1, 0, 0] and pure[1].sum() == 3 and (coarse[1][pure[1]] == 0).all()
    same, all_pure = pt.coarse_labels(lab, 1)
    assert torch.equal(same, lab) and all_pure.all()


def test_size_probabilities_equalise_compute():
    cfg = pt.PretrainConfig(sizes=(32, 64))
    p = cfg.size_probs()
    assert np.allclose(p, [8 / 9, 1 / 9])
    draws = [pt.draw_size(cfg, pt.step_generator(0, s)) for s in range(3000)]
    assert abs(draws.count(64) / 3000 - 1 / 9) < 0.02


def test_steps_use_several_canvas_sizes_and_the_derived_layers():
    res = pt.pretrain(steps=3, seed=1, sizes=(16, 32), ngf=4, num_downs=3, n_locations=32)
    assert set(res["sizes"]) <= {16, 32} and len(res["sizes"]) == 3
    assert res["net"].norm == "instance" and not res["net"].training
    with pytest.raises(ValueError, match="multiples of 8"):
        pt.pretrain(steps=1, sizes=(20,), ngf=4, num_downs=3)


def test_resume_is_exact(tmp_path):
    kw = dict(seed=2, sizes=(16, 32), ngf=4, num_downs=3, n_locations=32)
    whole = pt.pretrain(steps=6, **kw)
    ck = tmp_path / "p.ckpt"
    first = pt.pretrain(steps=6, checkpoint=ck, ckpt_every=2, stop_after=3, **kw)
    assert not first["complete"] and len(first["loss"]) == 3 and ck.exists()
    rest = pt.pretrain(steps=6, checkpoint=ck, ckpt_every=2, **kw)
    assert rest["complete"] and rest["loss"] == whole["loss"] and rest["sizes"] == whole["sizes"]
    for k, v in whole["net"].state_dict().items():
        assert torch.equal(v, rest["net"].state_dict()[k]), k
    with pytest.raises(ValueError, match="other settings"):
        pt.pretrain(steps=6, checkpoint=ck, **{**kw, "ngf": 8})


def test_cli_help_resume_and_weights(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="dgbench")
    pt.register_cli(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["pretrain-features", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--stop-after" in out and "--sizes" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain-features", "--sizes", "32,x"])
    assert "--sizes wants comma-separated integers, got '32,x'" in capsys.readouterr().err
    args = ["pretrain-features", "--name", "t", "--out", str(tmp_path), "--steps", "3",
            "--sizes", "16,32", "--ngf", "4", "--num-downs", "3", "--log-every", "1", "--ckpt-every", "1"]
    assert pt.main(args + ["--stop-after", "2"]) == 0
    assert (tmp_path / "t.ckpt").exists() and not (tmp_path / "t.pt").exists()
    assert pt.main(args) == 0
    log = (tmp_path / "t.log").read_text()
    assert "resumed from" in log and "step 3/3 loss" in log and log.count("command:") == 2
    meta = json.loads((tmp_path / "t.json").read_text())
    assert meta["git_blob_sha1"] == weights.git_blob_sha1(tmp_path / "t.pt")
    assert meta["steps"] == 3 and meta["sizes"] == [16, 32] and np.isfinite(meta["final_loss"])
    assert meta["dtype"] == "float32" and meta["architecture"]["norm"] == "instance"
    assert "--sizes 16,32" in meta["command"]
    state = torch.load(tmp_path / "t.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    e = ex.build_extractor("synthanat-v2", weights=tmp_path / "t.pt")
    assert e.weights_verified and e.net.ngf == 4 and e.net.norm == "instance" and e.out_channels == 16
    assert e.trained_size == 32


def test_pretraining_is_deterministic_from_seed():
    state = torch.random.get_rng_state()
    a = pt.pretrain(steps=2, sizes=(32,), seed=5, ngf=4, n_locations=32)
    b = pt.pretrain(steps=2, sizes=(32,), seed=5, ngf=4, n_locations=32)
    c = pt.pretrain(steps=2, sizes=(32,), seed=6, ngf=4, n_locations=32)
    assert a["loss"] == b["loss"] != c["loss"]
    assert torch.equal(a["net"].model[0].weight, b["net"].model[0].weight)
    assert torch.equal(torch.random.get_rng_state(), state)   # global RNG left alone
