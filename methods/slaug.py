"""SLAug: saliency-balancing location-scale augmentation (Su et al., AAAI 2023), 3-D.

On the device, after the standard augmentation (the label patch is the cropped, augmented one):
- GLA: one increasing random Bezier intensity curve over the whole patch, then a random scale
  and shift (location-scale), clipped to [0, 1];
- LLA: the same per label region, each region with its own curve; the background curve is
  always decreasing, each foreground class's with probability 0.5; voxels <= 0.01 keep their value;
- SBF: the gradient of the GLA loss w.r.t. the input gives a saliency map, pooled to a g^3 grid,
  B-spline upsampled and min-maxed to s in [0, 1]; the trained image is GLA*s + LLA*(1-s).

The original trains on GLA and on the fused image with one optimiser step over both losses. Here
`train_batch` runs the GLA forward itself (in training mode, under the loop's autocast), takes the
input gradient with the graph kept, and returns the fused batch; its `loss` adds the GLA loss to
the fused batch's, so the loop's single backward accumulates both losses' gradients, as the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dgbench.amp import autocast
from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import bspline_transpose, minmax

N_CURVE = 4096          # samples of each Bezier curve (the original uses 100 000 on the CPU)


def bezier_curves(lo: torch.Tensor, hi: torch.Tensor, decreasing: torch.Tensor, n: int = N_CURVE):
    """K random cubic Bezier intensity curves from (lo, lo) to (hi, hi) with two random interior
    control points, both coordinates sorted (monotone); `decreasing` curves get their y reversed.
    Returns xs, ys of shape (K, n); xs ascending."""
    k = lo.shape[0]
    dev = lo.device
    t = torch.linspace(0, 1, n, device=dev)
    basis = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3])   # 4 x n
    span = (hi - lo)[:, None]
    ctrl_x = torch.cat([lo[:, None], lo[:, None] + torch.rand(k, 2, device=dev) * span, hi[:, None]], 1)
    ctrl_y = torch.cat([lo[:, None], lo[:, None] + torch.rand(k, 2, device=dev) * span, hi[:, None]], 1)
    xs = (ctrl_x @ basis).sort(dim=1).values
    ys = (ctrl_y @ basis).sort(dim=1).values
    ys = torch.where(decreasing[:, None], ys.flip(1), ys)
    return xs, ys


def apply_curves(v: torch.Tensor, idx: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of v through curve idx[i] for every element (batched np.interp)."""
    k, n = xs.shape
    off = torch.arange(k, device=v.device, dtype=xs.dtype)[:, None] * 4.0    # curves live in disjoint bands
    flat_x = (xs - xs[:, :1] + off).reshape(-1)
    q = (v - xs[idx, 0]).clamp_min(0) + off[idx, 0]
    q = torch.minimum(q, (xs[idx, -1] - xs[idx, 0]) + off[idx, 0])
    j = torch.searchsorted(flat_x, q.contiguous()).clamp(1, flat_x.numel() - 1)
    j = torch.maximum(j, idx * n + 1)
    x0, x1 = flat_x[j - 1], flat_x[j]
    y_flat = ys.reshape(-1)
    w = ((q - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return y_flat[j - 1] + w * (y_flat[j] - y_flat[j - 1])


def location_scale(v: torch.Tensor, region: torch.Tensor, n_regions: int, slide: float = 20.0) -> torch.Tensor:
    """v*s + l per region (s = clip(N(1, 0.1), 0.9, 1.1), l ~ N(0, 0.5) clipped so the region's
    20th/80th percentiles stay in [0, 1]), then clipped to [0, 1]. `region`: index per element."""
    dev = v.device
    s = (1 + 0.1 * torch.randn(n_regions, device=dev)).clamp(0.9, 1.1)
    loc = 0.5 * torch.randn(n_regions, device=dev)
    lo_b, hi_b = torch.zeros(n_regions, device=dev), torch.zeros(n_regions, device=dev)
    for r in torch.unique(region).tolist():
        vals = v[region == r]
        if vals.numel() > 200_000:      # percentiles from a subsample: plenty for a 20/80 bound
            vals = vals[torch.randint(vals.numel(), (200_000,), device=dev)]
        q = torch.quantile(vals, torch.tensor([slide / 100, 1 - slide / 100], device=dev))
        lo_b[r], hi_b[r] = -q[0], 1 - q[1]
    loc = torch.maximum(torch.minimum(loc, hi_b), lo_b)
    return (v * s[region] + loc[region]).clamp(0, 1)


def _region_ranges(v: torch.Tensor, region: torch.Tensor, k: int):
    lo = torch.full((k,), float("inf"), device=v.device).scatter_reduce(0, region, v, "amin")
    hi = torch.full((k,), float("-inf"), device=v.device).scatter_reduce(0, region, v, "amax")
    present = torch.isfinite(lo)
    lo, hi = torch.where(present, lo, 0.0), torch.where(present, hi, 1.0)
    return lo, torch.maximum(hi, lo + 1e-6)


def global_la(x: torch.Tensor) -> torch.Tensor:
    """GLA: per sample one increasing curve, then location-scale."""
    b = x.shape[0]
    v = x.float().reshape(-1)
    region = torch.arange(b, device=x.device).repeat_interleave(x[0].numel())
    lo, hi = _region_ranges(v, region, b)
    xs, ys = bezier_curves(lo, hi, torch.zeros(b, dtype=torch.bool, device=x.device))
    out = location_scale(apply_curves(v, region, xs, ys), region, b)
    return out.view(x.shape)


def local_la(x: torch.Tensor, y: torch.Tensor, n_classes: int, bg_threshold: float = 0.01) -> torch.Tensor:
    """LLA: per sample and label region one curve (background always decreasing, foreground
    decreasing with probability 0.5), then location-scale; voxels <= bg_threshold unchanged."""
    b = x.shape[0]
    v = x.float().reshape(-1)
    lab = y.reshape(-1).long().clamp(0, n_classes - 1)
    region = torch.arange(b, device=x.device).repeat_interleave(x[0].numel()) * n_classes + lab
    k = b * n_classes
    lo, hi = _region_ranges(v, region, k)
    is_bg = (torch.arange(k, device=x.device) % n_classes) == 0
    decreasing = is_bg | (torch.rand(k, device=x.device) < 0.5)
    xs, ys = bezier_curves(lo, hi, decreasing)
    out = location_scale(apply_curves(v, region, xs, ys), region, k)
    out = torch.where(v <= bg_threshold, v, out)
    return out.view(x.shape)


def sbf_map(grad: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Saliency-balancing map in [0, 1] from the input gradient (B, C, *spatial)."""
    sal = grad.float().pow(2).mean(1, keepdim=True).sqrt()
    size = sal.shape[2:]
    sal = F.adaptive_avg_pool3d(sal, grid)
    sal = bspline_transpose(sal, [max(1, s // grid) for s in size], order=2)
    sal = F.interpolate(sal, size=size, mode="trilinear", align_corners=True)
    return minmax(sal)


@register_method("slaug")
class SLAug(Method):
    """GLA + label-aware LLA fused by the GLA loss's input saliency (2 forward/backward passes)."""
    defaults = {"grid": 3, "bg_threshold": 0.01}

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        self._gla_loss = None

    def train_batch(self, net, x, y):
        gla = global_la(x)
        lla = local_la(x, y, self.ctx.n_classes, self.hp["bg_threshold"])
        gla = gla.detach().requires_grad_(True)
        with autocast(x.device, self.ctx.amp_dtype):
            logits = net(gla)
            loss = self.ctx.loss_fn(logits.float(), y)
        grad, = torch.autograd.grad(loss, gla, retain_graph=True)
        self._gla_loss = loss
        s = sbf_map(grad, int(self.hp["grid"]))
        return gla.detach() * s + lla * (1 - s), y

    def loss(self, net, x, y, logits):
        """The loop's loss on the fused batch plus the GLA loss of this step's `train_batch`
        (handed over once)."""
        loss = super().loss(net, x, y, logits)
        gla, self._gla_loss = self._gla_loss, None
        return loss if gla is None else loss + gla
