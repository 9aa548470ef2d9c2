"""Pieces shared by the baseline methods (as benchmarked by Diaz et al. 2026): the loss on one of
stacked views, view consistency, per-sample min-max, B-spline smooth random fields, a base class
for our own per-sample CPU transforms, the split of
the standard augmentation into its geometric and intensity parts, and the scaling of published
per-transform probabilities to the run's augmentation strength (`aug_prob`).

Not a method: the leading underscore keeps `load_plugins` from importing it as a plug-in.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type
from torch import nn
from dgbench.spec import REFERENCE_AUG_PROB

# --- the loop's loss on stacked views -------------------------------------------------------

def view_loss(loss_fn, logits: torch.Tensor, y: torch.Tensor, n_views: int, view: int = 0) -> torch.Tensor:
    """The loop's loss on one of `n_views` equal stacked views: RandConv and GIN-IPA (and AdvBias
    with supervise="adv") supervise one view only and tie the others in by consistency."""
    return loss_fn(logits.chunk(n_views)[view].float(), y.chunk(n_views)[view])


def view_consistency(logits: torch.Tensor, n_views: int, direction: str = "to_mean",
                     classes: str = "sum") -> torch.Tensor:
    """Mean over views of a KL divergence between each view's softmax and the views' mean.

    direction "to_mean": KL(p_i || clamp(p_mean)) (RandConv / AugMix);
    direction "from_mean": KL(p_mean || p_i) (GIN-IPA's KLDivLoss(log p_i, p_mean); Ouyang et al. 2022).
    Averaged over samples and voxels; over classes summed (classes="sum": the per-voxel KL, as
    RandConv's F.kl_div(..., reduction="batchmean") on (sample, class) rows) or averaged
    (classes="mean": PyTorch's KLDivLoss(reduction="mean") over every element, as GIN-IPA's code
    has it, i.e. the "sum" value / C). Zero when every view predicts the same."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=1).chunk(n_views)
    p = [lp.exp() for lp in logp]
    mean = sum(p) / n_views
    if direction == "to_mean":
        log_mean = mean.clamp(1e-7, 1.0).log()
        terms = [F.kl_div(log_mean, pi, reduction="none") for pi in p]
    elif direction == "from_mean":
        terms = [F.kl_div(lp, mean, reduction="none") for lp in logp]
    else:
        raise ValueError(f"direction must be to_mean or from_mean, got {direction!r}")
    if classes not in ("sum", "mean"):
        raise ValueError(f"classes must be sum or mean, got {classes!r}")
    per_class = 1.0 if classes == "sum" else 1.0 / logits.shape[1]
    return per_class * sum(t.sum(1).mean() for t in terms) / n_views


# --- augmentation strength -------------------------------------------------------------------

def aug_scale(ctx) -> float:
    """The run's augmentation strength relative to the reference recipe (REFERENCE_AUG_PROB, the
    aug_prob at which the published probabilities of DA5 and BigAug apply unchanged): aug_prob / 0.33."""
    return float(ctx.aug_prob) / REFERENCE_AUG_PROB


def scaled_prob(p: float, scale: float) -> float:
    """A published per-transform probability at strength `scale` (see `aug_scale`), capped at 1."""
    return min(1.0, p * scale)


# --- small tensor helpers ----------------------------------------------------------------------

def minmax(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample min-max to [0, 1] (over every non-batch dimension)."""
    dims = tuple(range(1, x.ndim))
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def unit_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample L2 normalisation."""
    n = x.flatten(1).norm(dim=1).clamp_min(eps)
    return x / n.view(-1, *([1] * (x.ndim - 1)))


@contextlib.contextmanager
def untracked_batch_stats(net: nn.Module):
    """Forwards in training mode that normalise with the batch's statistics and update no
    BatchNorm buffer (running statistics, counters), as the AdvBias code's
    `_disable_tracking_bn_stats`; what they compute can be backpropagated after the block."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


# --- B-spline smooth fields (AdvBias / IPA / SLAug's saliency; cc215 AdvBias scheme, in 3-D) --

def bspline_kernel_1d(spacing: int, order: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The 1-D factor of the box-filter B-spline kernel of the AdvBias code (repeated mean
    filtering, same zero padding), so the 3-D kernel is the outer product of three of these."""
    ones = torch.ones(1, 1, spacing, dtype=torch.float64)
    k = ones
    for i in range(1, order + 1):
        k = F.conv1d(k, ones, padding=i * spacing) / spacing
    return k[0, 0].to(device=device, dtype=dtype)


def bspline_transpose(cp: torch.Tensor, spacing, order: int) -> torch.Tensor:
    """Transposed convolution of control points (B, C, *grid) with the separable B-spline kernel,
    stride = spacing, padding (K-1)/2: one 1-D pass per spatial axis (cheap; differentiable)."""
    out = cp
    nd = cp.ndim - 2
    spacing = [int(spacing)] * nd if np.isscalar(spacing) else [int(s) for s in spacing]
    for ax, s in enumerate(spacing):
        k = bspline_kernel_1d(s, order, cp.device, cp.dtype)
        pad = (k.numel() - 1) // 2
        moved = out.movedim(2 + ax, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        res = F.conv_transpose1d(flat, k.view(1, 1, -1), stride=s, padding=pad)
        out = res.reshape(*shape[:-1], res.shape[-1]).movedim(-1, 2 + ax)
    return out


class SmoothField:
    """Random smooth fields on an image grid, as the AdvBias code builds them: control points on
    a grid with `spacing` at 1/`downscale` resolution plus one point beyond each border, order-
    `order` B-spline interpolation, centre crop, trilinear upsampling to the image size."""

    def __init__(self, image_size, spacing: int = 32, order: int = 3, downscale: int = 2):
        self.image_size = tuple(int(s) for s in image_size)
        self.spacing, self.order, self.downscale = int(spacing), int(order), int(downscale)
        small = [s / self.downscale for s in self.image_size]
        cp = [int(math.ceil(s / self.spacing)) for s in small]
        inner = [self.spacing * c - (self.spacing - 1) for c in cp]
        self.grid = [c + 2 for c in cp]
        self.crop = []
        for n, s in zip(inner, small):
            diff = n - s
            flo = math.floor(abs(diff) / 2) * np.sign(diff)
            start = flo + (diff % 2) * np.sign(diff)
            self.crop.append((int(self.spacing + start), int(self.spacing + flo)))

    def random_points(self, batch: int, device=None) -> torch.Tensor:
        """Gaussian control points, L2-normalised per sample: (B, 1, *grid)."""
        return unit_normalize(torch.randn(batch, 1, *self.grid, device=device))

    def log_field(self, cp: torch.Tensor) -> torch.Tensor:
        """The interpolated field (before exponentiation) at full image size."""
        f = bspline_transpose(cp, self.spacing, self.order)
        sl = [slice(None), slice(None)] + [slice(a, f.shape[2 + i] - b) for i, (a, b) in enumerate(self.crop)]
        f = f[tuple(sl)]
        if tuple(f.shape[2:]) != self.image_size:
            f = F.interpolate(f, size=self.image_size, mode="trilinear", align_corners=True)
        return f

    def multiplicative(self, cp: torch.Tensor, epsilon: float) -> torch.Tensor:
        """exp(field), min-max rescaled per sample into [1 - epsilon, 1 + epsilon]."""
        return minmax(torch.exp(self.log_field(cp))) * (2 * epsilon) + (1 - epsilon)


# --- CPU transforms ----------------------------------------------------------------------------

def touches_label(t) -> bool:
    """True for a transform (or a OneOf/Compose holding one) that moves the label too."""
    if "label" in tuple(getattr(t, "keys", ())):
        return True
    return any(touches_label(c) for c in getattr(t, "transforms", ()))


def geometric(transforms: list) -> list:
    """The transforms of a list that move the label too (flips, rotations, affine)."""
    return [t for t in transforms if touches_label(t)]


def quiet_warp(**kwargs):
    """MONAI's Warp without its 'using PyTorch native grid_sample' warning on every construction."""
    import warnings
    from monai.networks.blocks import Warp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Warp(**kwargs)


class RandImageOp(RandomizableTransform, MapTransform):
    """A per-sample image transform of ours (where MONAI has none): with probability `prob`,
    `op(img, R)` on each key, where R is the MONAI-seeded numpy generator (so the sample stream
    stays a pure function of the run seed and the sample index) and img a (C, *spatial) tensor."""

    def __init__(self, keys=("image",), prob: float = 1.0):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)

    def op(self, img: torch.Tensor, R: np.random.RandomState) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, data):
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            src = d[key]
            if isinstance(src, torch.Tensor):
                img = src.as_tensor() if hasattr(src, "as_tensor") else src
            else:
                img = torch.as_tensor(np.asarray(src))
            img = img.float()
            d[key] = convert_to_dst_type(self.op(img, self.R), src)[0]
        return d


def gaussian_blob(shape, loc, scale) -> torch.Tensor:
    """exp(-1/2 sum_i ((x_i - loc_i) / scale_i)^2) on a voxel grid (nnU-Net's gradient kernels)."""
    axes = [torch.exp(-0.5 * ((torch.arange(n, dtype=torch.float32) - c) / s) ** 2)
            for n, c, s in zip(shape, loc, scale)]
    out = axes[0]
    for a in axes[1:]:
        out = out[..., None] * a
    return out
