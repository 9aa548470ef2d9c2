"""The standard augmentation on the device (dgbench.data.device_aug) against the per-sample MONAI
path it replaces: the same output for the same draw, the same parameter distributions, labels
aligned, and draws that are a function of (seed, sample index) only."""
import numpy as np
import pytest
import torch
from scipy import stats

from dgbench.data import device_aug as D
from dgbench.data.sampling import PatchDataset, standard_augmentation

PATCH = (12, 12, 8)


def pipelines(patch=PATCH, prob=1.0, sided=False):
    sp, it = standard_augmentation(patch, prob, sided)
    dsp, dit = D.standard_device_augmentation(patch, prob, sided)
    return sp + it, dsp + dit


def applied(t) -> dict | None:
    """The parameters MONAI's transform applied in its last call (None where it draws a field)."""
    n = type(t).__name__
    if n == "RandFlipd":
        return {"axis": 0}
    if n == "RandAxisFlipd":
        return {"axis": t.flipper._axis}
    if n == "RandRotate90d":
        return {"k": t._rand_k}
    if n == "RandSimulateLowResolutiond":
        return {"zoom": t.sim_lowres_tfm.zoom_factor}
    if n == "RandBiasFieldd":
        return {"coeff": list(t.rand_bias_field._coeff)}
    if n == "RandGibbsNoised":
        return {"alpha": t.rand_gibbs_noise.sampled_alpha}
    if n == "RandAdjustContrastd":
        return {"gamma": t.adjuster.gamma_value}
    if n == "RandGaussianSmoothd":
        r = t.rand_smooth
        return {"sigma": [r.x, r.y, r.z]}
    if n == "RandGaussianSharpend":
        r = t.rand_sharpen
        return {"sigma1": [r.x1, r.y1, r.z1], "sigma2": [r.x2, r.y2, r.z2], "alpha": r.a}
    if n == "RandAffined":   # the matrix it resampled with (its stored angles are redrawn per key)
        return {"matrix": np.asarray(t.rand_affine.rand_affine_grid.get_transformation_matrix(), dtype=np.float64)}
    assert n == "RandGaussianNoised", n
    return None


def sample_pair(patch=PATCH, seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.normal(size=(1, *patch)) * 50 + 100).astype(np.float32)
    lab = np.zeros((1, *patch), np.uint8)
    lab[0, 2:7, 3:11, 1:5] = 1                       # asymmetric boxes: a wrong axis or shift shows
    lab[0, 6:11, 1:4, 4:7] = 2
    return img, lab


def monai_run(t, img, lab, seed):
    t.set_random_state(seed)
    out = t({"image": torch.as_tensor(img.copy()), "label": torch.as_tensor(lab.astype(np.float32))})
    return np.asarray(out["image"]), np.asarray(out["label"])


@pytest.mark.parametrize("i", range(11))
def test_each_op_gives_monais_output_for_monais_draw(i):
    mon, dev = pipelines()
    t, op = mon[i], dev[i]
    img, lab = sample_pair()
    for seed in range(3):
        a, la = monai_run(t, img, lab, seed)
        p = applied(t)
        if p is None:
            continue
        x, y = op.apply(torch.as_tensor(img)[None].clone(), torch.as_tensor(lab)[None].clone(), [p])
        assert x.shape[1:] == a.shape and x.dtype == torch.float32
        assert np.allclose(x[0].numpy(), a, rtol=1e-5, atol=1e-5 * np.abs(a).max()), type(t).__name__
        assert np.array_equal(y[0].numpy(), la.astype(np.uint8)), type(t).__name__


def test_noise_is_the_drawn_std_and_replays_from_its_seed():
    op = D.GaussianNoise(1.0, std=0.1)
    x = torch.zeros(2, 1, 24, 24, 24)
    p = [{"std": 0.05, "seed": 7}, {"std": 0.08, "seed": 8}]
    a, _ = op.apply(x.clone(), x.clone(), p)
    b, _ = op.apply(x.clone(), x.clone(), p)
    assert torch.equal(a, b)
    assert a[0].std().item() == pytest.approx(0.05, rel=0.03) and abs(a[0].mean().item()) < 0.005
    assert a[1].std().item() == pytest.approx(0.08, rel=0.03)


def monai_draws(t, n, rng):
    """n parameter sets from MONAI's transform, as flat vectors (tiny inputs: only draws matter)."""
    img, lab = sample_pair((8, 8, 8))
    out = []
    for _ in range(n):
        seed = int(rng.integers(2 ** 31))
        if type(t).__name__ == "RandGaussianNoised":
            a, _ = monai_run(t, img, lab, seed)
            out.append([float(np.std(a - img))])      # MONAI keeps the field, not its std
        else:
            monai_run(t, img, lab, seed)
            out.append(flat(applied(t)))
    return np.array(out)


def flat(p: dict) -> list[float]:
    if "matrix" in p:
        return list(np.asarray(p["matrix"])[:3, :3].ravel())
    vals = []
    for k, v in sorted(p.items()):
        if k != "seed":
            vals += list(np.ravel(v))
    return [float(v) for v in vals]


def device_draws(op, n, rng):
    out = []
    for _ in range(n):
        p = op.draw(np.random.default_rng(int(rng.integers(2 ** 31))))
        out.append(flat(p))
    return np.array(out)


@pytest.mark.parametrize("i", range(11))
def test_parameter_distributions_match_monais(i):
    """Two-sample KS per parameter at 1e-3, Bonferroni over a transform's parameters (fixed
    seeds, so the outcome is fixed); and the firing rate."""
    mon, dev = pipelines((8, 8, 8), prob=1.0)
    t, op = mon[i], dev[i]
    rng = np.random.default_rng(1234 + i)
    n = 300
    a, b = monai_draws(t, n, rng), device_draws(op, n, rng)
    if type(t).__name__ == "RandGaussianNoised":
        b = b[:, :1]                               # the std (the seed is not MONAI's)
    assert a.shape == b.shape, (a.shape, b.shape)
    m = a.shape[1]
    for j in range(m):
        if np.ptp(a[:, j]) == 0 and np.ptp(b[:, j]) == 0:
            assert a[0, j] == b[0, j]                  # a fixed value (flip axis 0, shear-free entries)
            continue
        p = stats.ks_2samp(a[:, j], b[:, j]).pvalue
        assert p > 1e-3 / m, f"{type(t).__name__} parameter {j}: KS p = {p:.2g}"
    # firing rate at the recipe's 0.33: 400 draws, within 4 standard errors
    op.prob = 0.33
    fired = sum(op.draw(np.random.default_rng([5, k])) is not None for k in range(400))
    assert abs(fired / 400 - 0.33) < 4 * np.sqrt(0.33 * 0.67 / 400)


def test_the_distribution_test_can_fail():
    """Negative control: a sharpening whose sigma2 ignored sigma1 (U(0.5, 1)) is rejected."""
    mon, dev = pipelines((8, 8, 8))
    i = [type(t).__name__ for t in mon].index("RandGaussianSharpend")
    rng = np.random.default_rng(99)
    a = monai_draws(mon[i], 300, rng)
    wrong = D.GaussianSharpen(1.0, sigma2=(0.5,) * 3)
    wrong.sample = lambda R: {"sigma1": [R.uniform(0.5, 1) for _ in range(3)],
                              "sigma2": [R.uniform(0.5, 1) for _ in range(3)], "alpha": R.uniform(10, 30)}
    b = device_draws(wrong, 300, rng)
    assert min(stats.ks_2samp(a[:, j], b[:, j]).pvalue for j in range(a.shape[1])) < 1e-3 / a.shape[1]


def blob():
    lab = np.zeros((1, *PATCH), np.uint8)
    lab[0, 2:9, 3:6, 1:4] = 1
    lab[0, 2:4, 3:11, 1:4] = 1                      # an L: no symmetry to hide a wrong axis
    return lab


def test_geometry_keeps_labels_aligned_without_off_by_one():
    lab = blob()
    y = torch.as_tensor(lab)[None]
    x = y.float()
    # an exact 90-degree turn as an affine lands voxel centres on voxel centres: it must equal
    # rot90 exactly, image (bilinear) and label (nearest) alike
    turn = {"matrix": np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)}
    xa, ya = D.Affine(1.0).apply(x.clone(), y.clone(), [turn])
    for k in (1, 3):
        if torch.equal(ya[0], torch.rot90(y[0], k, (1, 2))):
            break
    else:
        raise AssertionError("a 90-degree affine is not a rot90 of the label")
    assert torch.equal(xa[0].round().to(torch.uint8), ya[0])
    ident = {"matrix": np.eye(4)}
    xi, yi = D.Affine(1.0).apply(x.clone(), y.clone(), [ident])
    assert torch.equal(yi, y) and torch.allclose(xi, x, atol=1e-6)
    # every geometric op firing, random draws: the image of the label stays on the label
    _, dev = pipelines(prob=1.0)
    aug = D.DeviceAugmentation([op for op in dev if "label" in op.keys], seed=3)
    xb, yb = aug(x.repeat(6, 1, 1, 1, 1), y.repeat(6, 1, 1, 1, 1), range(6))
    assert yb.dtype == torch.uint8 and xb.shape == x.repeat(6, 1, 1, 1, 1).shape
    for i in range(6):
        a, b = xb[i].numpy() > 0.5, yb[i].numpy() > 0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9
        assert np.abs(np.argwhere(a).mean(0) - np.argwhere(b).mean(0)).max() < 1.0


def test_patches_with_unequal_first_sides_keep_their_shape():
    """HVSMR-like 10x12x6: an odd 90-degree turn is cropped/padded back about the centre."""
    patch = (10, 12, 6)
    op = D.Rot90(1.0)
    y = torch.zeros(1, 1, *patch, dtype=torch.uint8)
    y[0, 0, 4:6, 5:7, 2] = 1                               # at the centre: survives the crop
    x, yr = op.apply(y.float(), y.clone(), [{"k": 1}])
    assert yr.shape == y.shape and int(yr.sum()) == 4 and torch.equal(x.round().to(torch.uint8), yr)
    _, dev = pipelines(patch, prob=1.0)
    xb, yb = D.DeviceAugmentation(dev, seed=0)(torch.rand(2, 1, *patch), torch.zeros(2, 1, *patch), [0, 1])
    assert xb.shape == (2, 1, *patch) and yb.shape == (2, 1, *patch)


def test_draws_depend_on_seed_and_index_only():
    _, dev = pipelines(prob=0.5)
    aug = D.DeviceAugmentation(dev, seed=11)
    img, lab = sample_pair()
    x = torch.as_tensor(img)[None].repeat(4, 1, 1, 1, 1) + torch.arange(4.0).view(4, 1, 1, 1, 1)
    y = torch.as_tensor(lab)[None].repeat(4, 1, 1, 1, 1)
    x0 = x.clone()
    xa, ya = aug(x, y, [8, 9, 10, 11])
    assert torch.equal(x, x0)                          # the inputs are left as they were
    xb, yb = aug(x[2:], y[2:], [10, 11])              # other batch, other position
    assert torch.equal(xa[2:], xb) and torch.equal(ya[2:], yb)
    xc, _ = D.DeviceAugmentation(dev, seed=12)(x, y, [8, 9, 10, 11])
    assert not torch.equal(xa, xc)
    assert xa.amin() >= 0 and xa.amax() <= 1


def test_crop_only_loader_plus_device_minmax_is_the_cpu_path_without_augmentation(synth_prepared):
    """aug_prob 0: the two paths differ only in where the min-max runs; same crops, same values."""
    ids = synth_prepared.adapter.split().train_cases(None)
    patch = (32, 32, 32)
    cpu = PatchDataset(synth_prepared, ids, patch, 5, 0.33, sum(standard_augmentation(patch, 0.0, True), []), 100)
    crop = PatchDataset(synth_prepared, ids, patch, 5, 0.33, None, 100)
    dsp, dit = D.standard_device_augmentation(patch, 0.0, True)
    aug = D.DeviceAugmentation(dsp + dit, seed=5)
    items = [crop[k] for k in (3, 4, 50)]
    assert items[0]["image"].dtype == torch.float32 and items[0]["label"].dtype == torch.uint8
    x, y = aug(torch.stack([s["image"] for s in items]), torch.stack([s["label"] for s in items]),
               [s["index"] for s in items])
    for n, k in enumerate((3, 4, 50)):
        ref = cpu[k]
        assert torch.allclose(x[n], ref["image"], atol=1e-6)
        assert torch.equal(y[n].long(), ref["label"])
