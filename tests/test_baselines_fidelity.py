"""Baselines against their originals: GIN/GIN-IPA (cheng-01037/Causality-Medical-Image-Domain-
Generalization), RandConv's consistency term (wildphoton/RandConv), SynthSeg's background
clusters, and one augmentation strength (`aug_prob`) for the replacement pipelines (DA5, BigAug)."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.transforms import RandomizableTransform

from conftest import method_context
from dgbench.registry import METHODS
from dgbench.spec import TrainConfig

PATCH = (32, 32, 32)


def make(name, n_classes=3, aug_prob=0.33, sided=False, **hp):
    return METHODS.get(name)(hp, method_context(n_classes, sided, PATCH, aug_prob))


def consistency_part(m, logits, n_views):
    """`m.loss` less the loop's loss on the supervised first view: the method's consistency term."""
    y = torch.randint(0, logits.shape[1], (logits.shape[0], 1, *logits.shape[2:]))
    sup = m.ctx.loss_fn(logits.chunk(n_views)[0], y.chunk(n_views)[0])
    return m.loss(None, None, y, logits) - sup


# --- GIN / GIN-IPA ---------------------------------------------------------------------------------

def original_gin_consistency(pred_all: torch.Tensor, nb: int) -> torch.Tensor:
    """models/exp_trainer.py `forward_consistency`, verbatim but for the 3-D shapes: the default
    `torch.nn.KLDivLoss()` is reduction "mean" (every element, class axis included)."""
    pred_all_prob = F.softmax(pred_all, dim=1)
    pred_avg = 1.0 / 3 * (pred_all_prob[:nb] + pred_all_prob[nb:nb * 2] + pred_all_prob[nb * 2:])
    pred_avg = torch.cat([pred_avg for _ in range(3)], dim=0)
    pred_all = F.log_softmax(pred_all, dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # "mean" is not the true KL; the original uses it
        return torch.nn.KLDivLoss(reduction="mean")(pred_all, pred_avg)


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("name,hp", [("gin-ipa", {}), ("gin", {"views": 3})])
def test_gin_consistency_is_the_originals_kldivloss_mean(name, hp, n_classes):
    torch.manual_seed(0)
    nb = 2
    logits = torch.randn(3 * nb, n_classes, 4, 5, 6) * 3
    m = make(name, n_classes=n_classes, **hp)
    got = consistency_part(m, logits, 3)
    assert m.hp["lambda_cons"] == 10.0
    want = 10.0 * original_gin_consistency(logits, nb)
    assert torch.allclose(got, want, rtol=1e-5), (got, want)
    # the same: the mean over views of KLDivLoss("mean")(log p_i, p_mean)
    logp = F.log_softmax(logits, 1).chunk(3)
    mean = sum(lp.exp() for lp in logp) / 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        per_view = sum(torch.nn.KLDivLoss(reduction="mean")(lp, mean) for lp in logp) / 3
    assert torch.allclose(got, 10.0 * per_view, rtol=1e-5)
    assert got > 1e-3


def test_randconv_consistency_is_the_originals_batchmean_per_voxel():
    """randconv_trainer.py: (kl_div(p_mix, p_clean, "batchmean") + ... ) / 3 with
    p_mix = clamp((p0 + p1 + p2) / 3, 1e-7, 1).log(); per voxel here: (sample, voxel) rows."""
    torch.manual_seed(1)
    nb, c = 2, 4
    logits = torch.randn(3 * nb, c, 3, 4, 5) * 3
    rows = logits.movedim(1, -1).reshape(3, -1, c)                         # (view, sample*voxel, class)
    p = F.softmax(rows, -1)
    p_mix = torch.clamp(p.mean(0), 1e-7, 1).log()
    want = sum(F.kl_div(p_mix, p[i], reduction="batchmean") for i in range(3)) / 3.0
    for name in ("randconv", "randconv-mix"):
        m = make(name, n_classes=c)
        got = consistency_part(m, logits, 3)
        assert torch.allclose(got, m.hp["lambda_cons"] * want, rtol=1e-5), name


def test_randconv_sends_each_view_through_the_network_on_its_own():
    """randconv_trainer.py calls the network once per view (`net(inputs)`, then once for each
    augmented copy), so every BatchNorm layer normalises a view with its own batch statistics.
    Revision 0 sent the three stacked views through as one batch, mixing their statistics."""
    from dgbench.models.backbones import PaperUNet
    from dgbench_methods.randconv import SeparateViews
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 16)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16))
    for name, hp, n in (("randconv", {}, 3), ("randconv-mix", {}, 3), ("randconv", {"lambda_cons": 0.0}, 1)):
        m = make(name, **hp)
        inner = PaperUNet(1, 3, width=4, levels=2)
        net = m.wrap_network(inner)
        assert isinstance(net, SeparateViews) == (n > 1), name
        seen = []
        inner.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
        net.train()
        torch.manual_seed(1)
        views, yy = m.train_batch(net, x, y)
        logits = net(views)
        assert seen == [2] * n, name                                   # one pass per view, batch 2 each
        alone = torch.cat([inner(v) for v in views.chunk(n)])          # each view on its own, train mode
        assert torch.allclose(logits, alone, atol=1e-5), name
        if n > 1:
            stacked = inner(views)                                     # revision 0: one pass over 3 views
            assert not torch.allclose(logits, stacked, atol=1e-3), name
            assert torch.isfinite(m.loss(net, views, yy, logits)), name
        net.eval()
        seen.clear()
        with torch.no_grad():
            net(x)
        assert seen == [2], name                                       # evaluation: one plain pass


def test_advbias_contour_term_is_the_originals_sobel_mse():
    """common/loss.py `contour_loss`: per foreground class, the MSE of the Sobel gradients of the
    two probability maps (zero padding), averaged over the gradient axes and the classes; in 3-D
    the Sobel filter of each axis smooths along the two others (scipy.ndimage.sobel)."""
    from scipy import ndimage
    from dgbench_methods.advbias import contour_distance
    torch.manual_seed(0)
    q, p = torch.rand(2, 3, 6, 7, 8), torch.rand(2, 3, 6, 7, 8)
    want = np.mean([np.mean((ndimage.sobel(q[n, c].numpy(), axis=a, mode="constant")
                             - ndimage.sobel(p[n, c].numpy(), axis=a, mode="constant")) ** 2)
                    for n in range(2) for c in range(3) for a in range(3)])
    assert math.isclose(float(contour_distance(q, p)), float(want), rel_tol=1e-5)
    assert float(contour_distance(q, q)) == 0.0


def test_advbias_loss_is_the_originals():
    """adv_compose_solver.py + advchain's training recipe: loss = supervised(f(x), y) +
    w x D(f(x_adv), f(x).detach()), D = KL(p_clean || p_adv) + 0.5 x contour. The adversarial
    images are never supervised, the clean prediction gets no gradient from D, and the
    adversarial forward leaves every BatchNorm buffer as the clean forward left it."""
    from dgbench.models.backbones import PaperUNet
    from dgbench_methods.advbias import contour_distance
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 16, 16, 16), torch.randint(0, 3, (2, 1, 16, 16, 16))
    m = make("advbias")
    net = PaperUNet(1, 3, width=4, levels=2).train()
    xb, yb = m.train_batch(net, x, y)
    assert torch.equal(xb, x) and torch.equal(yb, y)
    adv = m._adv.clone()
    logits = net(xb)                                              # the loop's clean forward
    after_clean = {k: v.clone() for k, v in net.state_dict().items()}
    logits_leaf = logits.detach().requires_grad_(True)
    loss = m.loss(net, xb, yb, logits_leaf)
    assert all(torch.equal(after_clean[k], v) for k, v in net.state_dict().items())   # buffers as left
    assert m._adv is None                                         # used once
    with torch.no_grad():
        adv_logits = net(adv)
        p = F.softmax(logits, 1)
        q = F.softmax(adv_logits, 1)
        kl = (p * (p.log() - q.log())).sum(1).mean()
        want = m.ctx.loss_fn(logits, y) + 1.0 * (kl + 0.5 * contour_distance(q[:, 1:], p[:, 1:]))
    assert torch.allclose(loss, want, rtol=1e-4)
    (g,) = torch.autograd.grad(loss, logits_leaf, retain_graph=True)   # D reaches the clean logits not at all
    (g_sup,) = torch.autograd.grad(m.ctx.loss_fn(logits_leaf, y), logits_leaf)
    assert torch.allclose(g, g_sup, atol=1e-7)
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)      # D trains the net through f(x_adv)


def test_gin_view_keeps_the_originals_frobenius_rescale_without_minmax():
    """The original feeds the Frobenius-rescaled GIN output of the z-scored image to the network
    (no min-max); here that happens in the patch's z frame and the view is mapped back."""
    from dgbench_methods.gin import gin_transform, gin_view
    torch.manual_seed(0)
    x = torch.rand(3, 1, 12, 12, 12) * torch.tensor([0.3, 0.6, 1.0]).view(3, 1, 1, 1, 1) + 0.05
    n = x[0].numel()
    m, s = x.mean((1, 2, 3, 4), keepdim=True), x.std((1, 2, 3, 4), keepdim=True, unbiased=False)
    seen = []
    for seed in range(6):
        torch.manual_seed(seed)
        v = make("gin").gin_view(x)
        torch.manual_seed(seed)
        assert torch.allclose(v, gin_transform((x - m) / s) * s + m, atol=1e-5)       # exactly that map
        torch.manual_seed(seed)
        assert torch.allclose(v, gin_view(x), atol=1e-6)
        z = (v - m) / s
        assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((3,), math.sqrt(n)), rtol=1e-4)
        seen.append(v)
    v = torch.stack(seen)
    assert v.min() < 0 or v.max() > 1                                     # not squeezed into [0, 1]
    lo, hi = v.flatten(2).amin(2), v.flatten(2).amax(2)
    assert not (torch.allclose(lo, torch.zeros_like(lo)) and torch.allclose(hi, torch.ones_like(hi)))


def test_gin_default_is_the_originals_three_view_gin_experiment():
    m = make("gin")
    assert m.hp["views"] == 3 and m.n_views == 3 and m.hp["lambda_cons"] == 10.0
    x, y = torch.rand(2, 1, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8))
    views, yy = m.train_batch(None, x, y)
    assert views.shape[0] == yy.shape[0] == 6 and torch.equal(yy[4:], y)
    assert consistency_part(m, torch.randn(6, 3, 8, 8, 8) * 3, 3) > 1e-3        # a consistency term


# --- SynthSeg background clusters --------------------------------------------------------------------

def plateau_patch(b=8, size=16, noise=0.0):
    """Background with two intensity plateaus (w < size/4: 0.15, else 0.8) and one organ (0.5)."""
    x = torch.full((b, 1, size, size, size), 0.8)
    x[..., : size // 4] = 0.15
    y = torch.zeros(b, 1, size, size, size, dtype=torch.long)
    y[:, :, 5:11, 5:11, 6:12] = 1
    x[y == 1] = 0.5
    if noise:
        x = x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    left = (y == 0).clone()
    left[..., size // 4:] = False
    right = (y == 0).clone()
    right[..., : size // 4] = False
    return x, y, left, right


def test_background_clusters_split_intensity_plateaus_deterministically():
    from dgbench_methods.synthseg import background_clusters
    x, y, left, right = plateau_patch(b=2, noise=0.03)                    # unequal plateaus (1/4, 3/4)
    c = background_clusters(x, y, 2)
    assert c.shape == y.shape and torch.equal(c, background_clusters(x, y, 2))
    assert (c[left] == 0).all() and (c[right] == 1).all()                 # darkest first
    c3 = background_clusters(x, y, 3)
    assert set(c3[y == 0].unique().tolist()) <= {0, 1, 2}
    order = x[y == 0].argsort()                                           # clusters are intensity intervals
    assert (c3[y == 0][order].diff() >= 0).all()
    none = background_clusters(x, torch.ones_like(y), 2)                 # no background: no failure
    assert none.shape == y.shape and none.min() >= 0 and none.max() <= 1


def test_synthseg_gives_background_clusters_their_own_gaussians():
    x, y, left, right = plateau_patch()
    plain = dict(n_classes=2, nonlin_std=0.0, bias_std=0.0, gamma_std=0.0, prob_min=1.0)
    # deterministic version: zero std, every generation label is one flat value
    for k in (1, 2):
        torch.manual_seed(0)
        m = make("synthseg", bg_clusters=k, std_range=[0.0, 0.0], **plain)
        g, n = m.generation_labels(x, y)
        assert n == 2 + k - 1
        assert torch.equal(g[y == 1], y[y == 1])
        out, y_out = m.train_batch(None, x, y)
        assert torch.equal(y_out, y)                                      # the target is the label
        for b in range(x.shape[0]):
            a, c = out[b][left[b]], out[b][right[b]]
            assert a.std() < 1e-6 and c.std() < 1e-6
            if k == 1:
                assert torch.equal(a.mean(), c.mean())                    # one background Gaussian
            else:
                assert (a.mean() - c.mean()).abs() > 1e-3                 # one per cluster
    # with the default stds: K = 2 separates the plateaus' means, K = 1 does not
    diffs = {}
    for k in (1, 2):
        torch.manual_seed(0)
        out, _ = make("synthseg", bg_clusters=k, **plain).train_batch(None, x, y)
        diffs[k] = torch.stack([out[b][left[b]].mean() - out[b][right[b]].mean() for b in range(x.shape[0])]).abs()
    assert diffs[1].max() < 0.03 and diffs[2].mean() > 0.1 and (diffs[2] > 0.03).sum() >= 6


def test_synthseg_clusters_the_deformed_real_image_and_mix_shares_the_setting():
    m = make("synthseg", n_classes=2, bg_clusters=3, nonlin_std=8.0)
    assert make("synthseg").hp["bg_clusters"] == make("synthseg-mix").hp["bg_clusters"] == 4
    x, y, _, _ = plateau_patch(b=2)
    seen = {}
    real = m.generation_labels

    def record(xx, yy):
        seen["x"], seen["y"] = xx, yy
        return real(xx, yy)
    m.generation_labels = record
    torch.manual_seed(3)
    out, y_out = m.train_batch(None, x, y)
    assert torch.equal(seen["y"], y_out) and not torch.equal(y_out, y)    # the deformed pair
    assert seen["x"].shape == x.shape and not torch.allclose(seen["x"], x)
    assert out.min() == 0 and out.max() == 1


# --- one augmentation strength ---------------------------------------------------------------------------

# rotation, scaling, 90° rotation (one per plane of equal edges), transpose, mirror x3, then intensity
DA5_PUBLISHED = ([0.4, 0.2] + [0.5] * 3 + [0.5] + [0.5] * 3
                 + [0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.15, 0.1, 0.1, 0.4, 0.3, 0.3, 0.2])
BIGAUG_PUBLISHED = [0.5] * 9


def own_probs(name, aug_prob):
    transforms = make(name, aug_prob=aug_prob).augmentation([], [])        # the method's own transforms only

    def walk(ts):
        for t in ts:
            yield t
            yield from walk(getattr(t, "transforms", ()))
    return [t.prob for t in walk(transforms) if isinstance(t, RandomizableTransform)]


@pytest.mark.parametrize("name,published", [("heavyaug", DA5_PUBLISHED), ("bigaug", BIGAUG_PUBLISHED)])
def test_replacement_pipelines_follow_aug_prob(name, published):
    from dgbench.spec import REFERENCE_AUG_PROB
    assert REFERENCE_AUG_PROB == TrainConfig().aug_prob == 0.33
    assert own_probs(name, 0.33) == pytest.approx(published)
    assert own_probs(name, 0.1) == pytest.approx([p * 0.1 / 0.33 for p in published])
    assert own_probs(name, 0.9) == pytest.approx([min(1.0, p * 0.9 / 0.33) for p in published])
    assert max(own_probs(name, 0.9)) == 1.0
