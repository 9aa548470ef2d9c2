"""Baseline methods (as benchmarked by Diaz et al. 2026): each method's mechanism, then every method for a few steps
through the real loop on the embedded benchmark."""
import copy
import csv
import re

import numpy as np
import pytest
import torch
from monai import transforms as T

from conftest import TINY_TRAIN, folder_digest, method_context, tiny_synth_run
from dgbench.data.sampling import standard_augmentation
from dgbench.models.backbones import build_backbone
from dgbench.registry import METHODS

BASELINES = ["heavyaug", "bigaug", "randconv", "randconv-mix", "gin", "gin-ipa", "mixstyle", "dsu",
             "slaug", "synthseg", "synthseg-mix", "advbias"]
PATCH = (32, 32, 32)


def make(name, sided=False, n_classes=3, **hp):
    return METHODS.get(name)(hp, method_context(n_classes, sided, PATCH))


def blob_label(shape=PATCH):
    lab = np.zeros((1, *shape), np.float32)
    lab[0, 6:20, 8:26, 5:24] = 1
    lab[0, 18:28, 3:12, 12:22] = 2
    return lab


def pipeline(m, sided):
    sp, it = standard_augmentation(PATCH, 0.33, sided)
    return m.augmentation(sp, it)


def walk(transforms):
    for t in transforms:
        yield t
        yield from walk(getattr(t, "transforms", ()))


# --- the plug-in contract ----------------------------------------------------------------------

# What a plug-in may import from the engine (docs/CONTRACTS.md, "Methods"): module -> names (None: any)
PLUGIN_API = {"dgbench.method": None, "dgbench.amp": None, "dgbench.registry": {"register_method"},
              "dgbench.models.extractors": None, "dgbench.models.weights": {"BUNDLED"},
              "dgbench.models.backbones": None,
              "dgbench.spec": {"REFERENCE_AUG_PROB"}}


def test_plugins_import_only_the_plugin_api():
    """methods/ reaches the engine only through the plug-in API, never the loop's or the
    evaluator's internals (dgbench.train, dgbench.evaluate, ...)."""
    import ast
    from pathlib import Path
    files = sorted((Path(__file__).resolve().parents[1] / "methods").glob("*.py"))
    assert len(files) > 10
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [(node.module, {a.name for a in node.names})]
            else:
                continue
            for mod, names in mods:
                if mod.split(".")[0] != "dgbench":
                    continue
                assert mod in PLUGIN_API, f"{f.name} imports {mod}"
                allowed = PLUGIN_API[mod]
                assert allowed is None or (names is not None and names <= allowed), f"{f.name}: {mod} {names}"


def test_the_loop_gives_methods_the_runs_facts(tmp_path, synth_prepared):
    from dgbench.rundir import RunDir
    from dgbench.spec import resolve
    from dgbench.train import Trainer
    spec = resolve("synth", "heavyaug", train={**TINY_TRAIN, "amp": "bf16", "aug_prob": 0.5})
    tr = Trainer(spec, RunDir(tmp_path / "run"), device=torch.device("cpu"), progress=False)
    ctx = tr.method.ctx
    assert ctx.loss_fn is tr.loss_fn and ctx.amp_dtype is tr.amp is torch.bfloat16
    assert (ctx.n_classes, ctx.sided) == (tr.adapter.n_classes, tr.adapter.sided)
    assert ctx.patch_size == tuple(tr.cfg.patch_size) and ctx.aug_prob == 0.5 and ctx.device == tr.device


def test_a_method_needs_its_context():
    with pytest.raises(TypeError, match="needs a MethodContext"):
        METHODS.get("erm")({}, None)
    with pytest.raises(TypeError):
        METHODS.get("erm")({})
    ctx = method_context(n_classes=4, sided=True, patch_size=[16, 32, 48], aug_prob=0.5)
    assert ctx.patch_size == (16, 32, 48) and ctx.n_classes == 4 and ctx.sided and ctx.amp_dtype is None
    with pytest.raises(AttributeError):
        ctx.n_classes = 5                                                   # frozen: the run's facts


# --- feature statistics ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mixstyle", "dsu"])
@pytest.mark.parametrize("backbone", ["unet", "dynunet"])
def test_feature_stats_change_in_training_identity_in_eval(name, backbone):
    torch.manual_seed(0)
    net = build_backbone(backbone, 1, 3, width=4, levels=3)
    ref = copy.deepcopy(net)
    wrapped = make(name, p=1.0).wrap_network(net)
    n_sites = {"mixstyle": len(net.encoder_stages) - 1, "dsu": len(net.encoder_stages) + 1}[name]
    assert len(wrapped.feature_stats) == n_sites                           # DSU: encoder + bottleneck
    assert wrapped.state_dict().keys() == ref.state_dict().keys()         # checkpoints unchanged
    x = torch.rand(4, 1, 16, 16, 16) * torch.tensor([0.2, 1.0, 5.0, 25.0]).view(4, 1, 1, 1, 1)  # distinct styles
    wrapped.eval(), ref.eval()
    assert torch.equal(wrapped(x), ref(x))                                 # exact identity at eval
    for mod in wrapped.feature_stats:
        assert mod(x) is x
    train_ref = copy.deepcopy(ref).train()
    assert (wrapped.train()(x) - train_ref(x)).abs().max() > 1e-2          # the hooks act in training


def test_dsu_needs_a_bottleneck():
    class NoBottleneck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder_stages = torch.nn.ModuleList([torch.nn.Conv3d(1, 2, 3, padding=1)])

    with pytest.raises(TypeError, match="bottleneck=false"):
        make("dsu").wrap_network(NoBottleneck())
    assert len(make("dsu", bottleneck=False).wrap_network(NoBottleneck()).feature_stats) == 1


def test_mixstyle_mixes_statistics_between_samples():
    from dgbench_methods.mixstyle import MixStyle
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1, 1) \
        + torch.tensor([0.0, 5.0, 10.0, 15.0]).view(4, 1, 1, 1, 1)
    out = MixStyle(p=1.0).train()(x)
    mu_in, mu_out = x.mean((2, 3, 4)), out.mean((2, 3, 4))
    assert not torch.allclose(mu_in, mu_out, atol=1e-3)
    # every output mean is a convex combination of two input means of the same channel
    lo, hi = mu_in.min(0).values, mu_in.max(0).values
    assert ((mu_out >= lo - 1e-4) & (mu_out <= hi + 1e-4)).all()
    # normalised content is kept: per-sample standardised maps are unchanged
    z = lambda t: (t - t.mean((2, 3, 4), keepdim=True)) / t.std((2, 3, 4), keepdim=True)  # noqa: E731
    assert torch.allclose(z(out), z(x), atol=1e-3)


def test_dsu_resamples_statistics_with_gradients():
    from dgbench_methods.mixstyle import DSU
    torch.manual_seed(0)
    x = (torch.randn(4, 2, 8, 8, 8) * 3 + 1).requires_grad_(True)
    out = DSU(p=1.0).train()(x)
    assert not torch.allclose(out.mean((2, 3, 4)), x.mean((2, 3, 4)), atol=1e-3)
    out.sum().backward()                                                    # statistics not detached
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- GIN / IPA -----------------------------------------------------------------------------------

def test_gin_preserves_norm_and_redraws_kernels_per_call_and_sample():
    from dgbench_methods.gin import gin_transform
    torch.manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 16).repeat(3, 1, 1, 1, 1)                  # three identical samples
    g1, g2 = gin_transform(x), gin_transform(x)
    assert torch.allclose(g1.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-4)
    assert not torch.allclose(g1, g2)                                       # redrawn every call
    assert not torch.allclose(g1[0], g1[1]) and not torch.allclose(g1[1], g1[2])   # and per sample
    views, y = make("gin").train_batch(None, x, torch.zeros(3, 1, 16, 16, 16, dtype=torch.long))
    assert views.shape[0] == y.shape[0] == 9 and torch.isfinite(views).all()   # 3 views by default
    # no min-max: every view keeps the z-scored input's energy about the input's mean
    # (test_baselines_fidelity.py pins the map against the original code)
    m, s = x.mean((1, 2, 3, 4)), x.std((1, 2, 3, 4), unbiased=False)
    for v in views.chunk(3):
        z = (v - m.view(3, 1, 1, 1, 1)) / s.view(3, 1, 1, 1, 1)
        assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((3,), 16 ** 1.5), rtol=1e-4)


def test_ipa_mask_is_smooth_in_unit_interval_and_blends_complementary_views():
    m = make("gin-ipa")
    torch.manual_seed(0)
    mask = m.blend_mask(2, (64, 64, 64), "cpu")
    assert mask.shape == (2, 1, 64, 64, 64)
    assert mask.min() >= 0 and mask.max() <= 1
    flat = mask.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(2)) and torch.allclose(flat.amax(1), torch.ones(2))
    steps = [mask.diff(dim=d).abs().max().item() for d in (2, 3, 4)]
    assert max(steps) < 0.1                                                 # smooth: no jumps between voxels
    assert not torch.allclose(mask[0], mask[1])
    # views 1 and 2 swap two GIN views under m and 1 - m; view 3 is plain
    g = iter([torch.zeros(2, 1, 32, 32, 32), torch.ones(2, 1, 32, 32, 32), torch.full((2, 1, 32, 32, 32), 0.5)])
    m.gin_view = lambda x: next(g)
    v, y = m.train_batch(None, torch.rand(2, 1, 32, 32, 32), torch.zeros(2, 1, 32, 32, 32, dtype=torch.long))
    v1, v2, v3 = v.chunk(3)
    assert torch.allclose(v1 + v2, torch.ones_like(v1)) and (v3 == 0.5).all() and y.shape[0] == 6
    assert v1.std() > 0.05                                                  # a spatially varying mask


# --- RandConv --------------------------------------------------------------------------------------

def test_randconv_kernel_sizes_from_its_set_and_one_kernel_per_batch():
    from dgbench_methods.randconv import random_conv
    x = torch.zeros(2, 1, 15, 15, 15)
    x[:, 0, 7, 7, 7] = 1.0                                                   # the same impulse twice
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out, k = random_conv(x, (1, 3, 5, 7))
        assert k in (1, 3, 5, 7)
        nz = out[0, 0].abs() > 0
        extent = [int(nz.any(dim=tuple(a for a in range(3) if a != d)).sum()) for d in range(3)]
        assert extent == [k, k, k]                                          # the impulse response is k wide
        assert torch.equal(out[0], out[1])                                  # one kernel for the whole batch
        seen.add(k)
    assert seen == {1, 3, 5, 7}
    m = make("randconv")
    torch.manual_seed(0)
    img = torch.rand(2, 1, 16, 16, 16)
    views = [m.view(img) for _ in range(40)]
    same = sum(torch.equal(v, img) for v in views)
    assert 8 <= same <= 32                                                  # rc_img: identity with p 0.5
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)


# --- consistency losses ----------------------------------------------------------------------------

def test_consistency_losses_zero_for_identical_predictions():
    from dgbench_methods._common import view_consistency, view_loss
    torch.manual_seed(0)
    one = torch.randn(2, 4, 6, 6, 6)
    same = one.repeat(3, 1, 1, 1, 1)
    for direction in ("to_mean", "from_mean"):
        assert view_consistency(same, 3, direction).abs() < 1e-6
        assert view_consistency(torch.randn(6, 4, 6, 6, 6), 3, direction) > 1e-3
    y = torch.randint(0, 4, (2, 1, 6, 6, 6)).repeat(3, 1, 1, 1, 1)
    for name in ("randconv", "gin-ipa"):                    # identical views: only the supervised view's loss
        m = make(name, n_classes=4)
        assert torch.allclose(m.loss(None, None, y, same), view_loss(m.ctx.loss_fn, same, y, 3), atol=1e-6)
    a = make("advbias", n_classes=4)
    two = one.repeat(2, 1, 1, 1, 1)
    assert torch.allclose(a.loss(None, None, y[:4], two), a.ctx.loss_fn(two, y[:4]), atol=1e-6)
    # the supervised part: one view for the multi-view methods, every sample otherwise
    logits = torch.randn(6, 4, 6, 6, 6, requires_grad=True)
    yy = torch.randint(0, 4, (6, 1, 6, 6, 6))
    for name, hp, n, view in (("gin-ipa", {}, 3, 0), ("gin", {"views": 3}, 3, 0),
                              ("advbias", {}, 1, 0),
                              ("erm", {}, 1, 0)):
        m = make(name, n_classes=4, **hp, **({} if name == "erm" else {"lambda_cons": 0.0}))
        got = m.loss(None, None, yy, logits)
        sl = slice(view * 6 // n, (view + 1) * 6 // n)
        assert torch.allclose(got, m.ctx.loss_fn(logits[sl], yy[sl])), name
        (g,) = torch.autograd.grad(got, logits)
        outside = torch.ones(6, dtype=torch.bool)
        outside[sl] = False
        assert g[outside].abs().sum() == 0 and g[sl].abs().amax() > 0, name     # only that view learns


def loss_before_one_hook(name, hp, loss_fn, logits, y):
    """A method's step loss as the loop composed it before `Method.loss` replaced the two hooks
    `supervised_loss` and `extra_loss`: supervised + extra, each as the method defined it."""
    from dgbench_methods._common import view_consistency, view_loss
    full = loss_fn(logits.float(), y)
    if name in ("randconv", "randconv-mix"):
        lam = hp.get("lambda_cons", 5.0 if name == "randconv" else 10.0)
        return full if lam == 0 else view_loss(loss_fn, logits, y, 3) + lam * view_consistency(logits, 3, "to_mean")
    if name in ("gin", "gin-ipa"):
        n = hp.get("views", 3)
        if n == 1:
            return view_loss(loss_fn, logits, y, 1)
        return view_loss(loss_fn, logits, y, n) + 10.0 * view_consistency(logits, n, "from_mean", classes="mean")
    return full       # AdvBias: its consistency needs the net (test_advbias_loss_is_the_originals)


LOSS_VARIANTS = [(n, {}) for n in METHODS.names()] + [
    ("advbias", {"lambda_cons": 0.0}), ("gin", {"views": 1}),
    ("randconv", {"lambda_cons": 0.0})]


@pytest.mark.parametrize("name,hp", LOSS_VARIANTS)
def test_loss_hook_pins_each_methods_step_loss_exactly(name, hp):
    """Every method's step loss, bit for bit: the loop's loss on the samples it supervises plus
    its consistency term, as composed before the loss hooks were merged into `Method.loss`."""
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 6, 6, 6) * 3
    y = torch.randint(0, 3, (6, 1, 6, 6, 6))
    m = make(name, **hp)
    got = m.loss(None, None, y, logits)
    assert torch.equal(got, loss_before_one_hook(name, hp, m.ctx.loss_fn, logits, y)), name
    assert got > 0.1



# --- SLAug ---------------------------------------------------------------------------------------------

def test_slaug_curves_and_saliency_fusion():
    from dgbench_methods.slaug import global_la, local_la, sbf_map
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 16 ** 3).view(1, 1, 16, 16, 16)
    g = global_la(ramp).flatten()
    assert (g.diff() >= -1e-6).all() and g.min() >= 0 and g.max() <= 1    # GLA: increasing curve
    lla = local_la(ramp, torch.zeros_like(ramp, dtype=torch.long), n_classes=2).flatten()
    keep = ramp.flatten() <= 0.01
    assert torch.equal(lla[keep], ramp.flatten()[keep])                     # near-black voxels untouched
    assert (lla[~keep].diff() <= 1e-6).all()                                # background curve decreasing
    s = sbf_map(torch.randn(2, 1, 24, 24, 24))
    assert s.min() >= 0 and s.max() <= 1 and s.diff(dim=2).abs().max() < 0.3
    m = make("slaug", n_classes=3)
    net = build_backbone("unet", 1, 3, width=4, levels=2)
    y = torch.from_numpy(blob_label()[:, ::2, ::2, ::2].copy()).long()[None].repeat(2, 1, 1, 1, 1)
    x = torch.rand(2, 1, 16, 16, 16)
    fused, y2 = m.train_batch(net, x, y)
    assert fused.shape == x.shape and torch.equal(y2, y) and fused.min() >= 0 and fused.max() <= 1
    assert all(p.grad is None for p in net.parameters())                    # saliency: input gradient only
    logits = net(fused)
    gla_loss = m._gla_loss
    assert gla_loss.requires_grad
    plain = m.ctx.loss_fn(logits, y)
    assert torch.equal(m.loss(net, fused, y, logits), plain + gla_loss)      # both losses, one backward
    assert torch.equal(m.loss(net, fused, y, logits), plain)                  # the GLA loss is handed over once


# --- SynthSeg -----------------------------------------------------------------------------------------

def test_synthseg_voxels_of_a_label_share_one_gaussian_and_label_is_kept():
    m = make("synthseg", n_classes=3)
    torch.manual_seed(0)
    y = torch.from_numpy(blob_label()).long()[None].repeat(2, 1, 1, 1, 1)
    img = m.gmm(y)
    for b in range(2):
        means = []
        for lab in range(3):
            v = img[b][y[b] == lab]
            assert 25 - 3 < v.mean() < 225 + 3 and 5 * 0.8 < v.std() < 25 * 1.2
            means.append(v.mean().item())
        assert len({round(mu) for mu in means}) == 3                        # one component per label
    plain = make("synthseg", n_classes=3, nonlin_std=0.0, bias_std=0.0, gamma_std=0.0, prob_min=1.0, bg_clusters=1)
    x = torch.rand(2, 1, 32, 32, 32)
    out, y_out = plain.train_batch(None, x, y)
    assert torch.equal(y_out, y) and out.min() == 0 and out.max() == 1
    assert not torch.allclose(out, x)                                       # the image is replaced
    for b in range(2):                                                      # min-max keeps one Gaussian per label
        stds = [out[b][y[b] == lab].std() for lab in range(3)]
        assert max(stds) < 0.5 * out[b].std() * 3
    # deformation moves image and label together
    lab = y.float()
    xd, yd = m.deform(lab, y)
    assert (xd.round().long() == yd).float().mean() > 0.97 and not torch.equal(yd, y)


# --- AdvBias ------------------------------------------------------------------------------------------

def test_advbias_search_leaves_bn_stats_and_grads_alone():
    m = make("advbias", n_classes=3, steps=2)
    torch.manual_seed(0)
    net = build_backbone("unet", 1, 3, width=4, levels=2).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.rand(2, 1, 16, 16, 16), torch.randint(0, 3, (2, 1, 16, 16, 16))
    xb, yb = m.train_batch(net, x, y)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())    # running stats untouched
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(xb, x) and torch.equal(yb, y)                    # the loop's forward: the clean batch
    adv = m._adv
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1 and not torch.allclose(adv, x)
    field = m.field(x.shape[2:]).multiplicative(m.field(x.shape[2:]).random_points(2), 0.3)
    assert field.min() >= 0.7 - 1e-5 and field.max() <= 1.3 + 1e-5


# --- CPU pipelines: alignment and sided datasets ------------------------------------------------------

@pytest.mark.parametrize("name", ["erm", "heavyaug", "bigaug", "synthseg"])
def test_geometric_transforms_keep_image_and_label_aligned(name):
    from dgbench_methods._common import geometric
    geo = geometric(pipeline(make(name, sided=False), sided=False))
    for t in walk(geo):
        if hasattr(t, "prob"):
            t.prob = 1.0                                                   # every geometric transform fires
    tr = T.Compose(geo)
    lab = (blob_label() > 0).astype(np.float32)          # an asymmetric L-shaped foreground
    for seed in range(4):
        tr.set_random_state(seed=seed)
        out = tr({"image": lab.copy(), "label": lab.copy()})
        a, b = np.asarray(out["image"]) > 0.5, np.asarray(out["label"]) > 0.5
        assert a.shape == b.shape == lab.shape
        # bilinear image vs nearest label: only the (stack-blurred) boundary may differ
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9
        assert np.abs(np.argwhere(a).mean(0) - np.argwhere(b).mean(0)).max() < 1.0


@pytest.mark.parametrize("name", ["erm"] + BASELINES)
def test_sided_datasets_get_no_flips(name):
    banned = (T.RandFlipd, T.RandAxisFlipd, T.RandRotate90d, T.Flipd, T.Rotate90d)
    names = {type(t).__name__ for t in walk(pipeline(make(name, sided=True), sided=True))}
    assert not names & {c.__name__ for c in banned} and "RandTransposed" not in names
    if name == "heavyaug":                                                  # unsided: DA5 mirrors and transposes
        free = {type(t).__name__ for t in walk(pipeline(make(name, sided=False), sided=False))}
        assert {"RandFlipd", "RandRotate90d", "RandTransposed"} <= free


def test_replaced_intensity_pipelines_still_reach_unit_range():
    lab = blob_label()
    for name in ("heavyaug", "bigaug"):
        tr = T.Compose(pipeline(make(name), sided=False) + [T.ScaleIntensityd(["image"], minv=0.0, maxv=1.0)])
        for seed in range(3):
            tr.set_random_state(seed=seed)
            out = tr({"image": np.random.default_rng(seed).random((1, *PATCH), dtype=np.float32), "label": lab.copy()})
            img = np.asarray(out["image"])
            assert np.isfinite(img).all() and img.min() == 0 and img.max() == 1
            assert set(np.unique(np.asarray(out["label"]))) <= {0, 1, 2}


# --- end to end -----------------------------------------------------------------------------------------

@pytest.fixture
def few_eval_cases(monkeypatch):
    """Evaluate one validation case only (the mechanism under test is the method's hooks in the
    loop; the evaluator has its own tests)."""
    import dgbench.train as train
    from dgbench.registry import DATASETS
    split = DATASETS.get("synth")().split()
    wanted = {split.val[0]}
    real = train.evaluate_cases

    def subset(net, method, prepared, cases, *args, **kwargs):
        return real(net, method, prepared, [c for c in cases if c[1] in wanted], *args, **kwargs)
    monkeypatch.setattr(train, "evaluate_cases", subset)


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_end_to_end(name, tmp_path, synth_prepared, few_eval_cases):
    from dgbench.rundir import RunDir
    from dgbench.spec import resolve
    from dgbench.train import execute
    spec = resolve("synth", name, seed=0, train={**TINY_TRAIN, "steps": 1, "val_every": 1, "ckpt_every": 1})
    state = execute(spec, tmp_path, progress=False)
    rd = RunDir.for_run(tmp_path, spec.run_id)
    assert state == "done", rd.failed_file.read_text() if rd.failed_file.exists() else state
    rows = list(csv.DictReader(open(rd.metrics_file)))
    assert rows and {r["method"] for r in rows} == {name}


def test_view_agreement_diagnostic_reads_a_gin_run_and_changes_nothing(tmp_path, synth_prepared, capsys):
    """benchmarks/view_agreement.py on a trained tiny GIN run: ground truth and each of the 3
    views' predicted class fractions sum to 1, the loss parts are finite, the folder is left as
    it was; a single-view run is refused with a message naming it."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import view_agreement
    folders = {method: tiny_synth_run(tmp_path, method)[0] for method in ("gin", "erm")}
    before = folder_digest(folders["gin"].path)
    capsys.readouterr()
    assert view_agreement.main([str(folders["gin"].path), "--batches", "2"]) == 0
    out = capsys.readouterr().out
    sup, cons = (float(v) for v in re.search(r"supervised loss ([\d.]+), consistency part (-?[\d.]+)", out).groups())
    assert sup > 0 and abs(cons) < 1e3
    rows = [line for line in out.splitlines() if line.startswith(("| ground truth", "| view "))]
    assert [r.split("|")[1].strip() for r in rows] == ["ground truth"] + [f"view {v} predicted" for v in (1, 2, 3)]
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| voxel fraction")).strip("|").split("|")]
    assert header[1:] == ["background", "liver", "kidneys", "aorta", "spleen"]
    for r in rows:
        assert sum(float(c) for c in r.strip("|").split("|")[1:]) == pytest.approx(1.0, abs=0.003)
    assert folder_digest(folders["gin"].path) == before
    assert view_agreement.main([str(folders["erm"].path)]) == 2
    assert "method 'erm' stacks no views" in capsys.readouterr().err
