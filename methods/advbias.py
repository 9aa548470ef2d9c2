"""AdvBias: adversarial bias-field augmentation (Chen et al., MICCAI 2020), 3-D.

The bias field: Gaussian control points (spacing 32 at half resolution, one extra point beyond
each border, L2-normalised per sample), order-3 B-spline interpolation, exponentiated and
rescaled into [1 - eps, 1 + eps], multiplied with the image (then min-max to [0, 1], our range).

The training loss is the original's (cherise215/AdvBias, `ComposeAdversarialTransformSolver`
in adv_compose_solver.py, `calc_segmentation_consistency` in common/loss.py; the same recipe in
its successor advchain's README): the supervised loss on the clean batch, plus lambda_cons x
an adversarial consistency term D(f(x_adv), f(x)) that the adversarial images enter only
through; they are never supervised with the labels.
- D = KL(p_clean || p_adv) per voxel (summed over classes, averaged over voxels) + 0.5 x a
  contour term: the mean squared difference of the Sobel gradients of the two predictions'
  foreground probability maps (`contour_weight`; the original's default divergences
  ['kl', 'contour'] with weights [1.0, 0.5], its 2-D Sobel pair made 3-D). The clean
  prediction is the reference, without gradients.
- The search: predict the clean image (no gradients), then `steps` rounds of gradient ascent
  on the control points to maximise D: step along the L2-normalised gradient, re-normalise.
- Every forward of the adversarial images (search and loss) runs the net in training mode
  (batch statistics) without updating any buffer, as the original's
  `_disable_tracking_bn_stats`: BatchNorm running statistics see the clean batch only. The
  clean reference is the loop's own forward of the clean batch (the same weights, input and
  batch statistics as the original's separate no-gradient pass), detached.
Revision 0 trained on [clean; adversarial] stacked in one batch, supervised both halves and
tied them with a two-sided KL to their mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dgbench.amp import autocast
from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import SmoothField, minmax, unit_normalize, untracked_batch_stats


@register_method("advbias")
class AdvBias(Method):
    """Adversarial bias field: +1 clean forward, `steps` x (forward + input backward), +1 adversarial
    forward and backward per step."""
    defaults = {"epsilon": 0.3, "spacing": 32, "downscale": 2, "order": 3, "steps": 1, "step_size": 1.0,
                "lambda_cons": 1.0, "contour_weight": 0.5}
    revision = 1    # 1: the original's loss (clean supervised + D(adv, clean)); 0: stacked, both supervised

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        self._fields: dict = {}
        self._adv: torch.Tensor | None = None     # this step's adversarial batch, from train_batch to loss

    def field(self, size) -> SmoothField:
        size = tuple(int(s) for s in size)
        if size not in self._fields:
            self._fields[size] = SmoothField(size, self.hp["spacing"], self.hp["order"], self.hp["downscale"])
        return self._fields[size]

    def biased(self, x: torch.Tensor, cp: torch.Tensor) -> torch.Tensor:
        return minmax(x.float() * self.field(x.shape[2:]).multiplicative(cp, self.hp["epsilon"]))

    def distance(self, adv_logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
        """The original's D(f(x_adv), f(x)): KL(p_clean || p_adv) + contour_weight x contour."""
        logq = F.log_softmax(adv_logits.float(), dim=1)
        kl = F.kl_div(logq, p_clean, reduction="none").sum(1).mean()
        if self.hp["contour_weight"] == 0:
            return kl
        return kl + self.hp["contour_weight"] * contour_distance(logq.exp()[:, 1:], p_clean[:, 1:])

    def adversarial_points(self, net, x: torch.Tensor) -> torch.Tensor:
        """Control points after `steps` gradient-ascent steps on D(f(biased x), f(x))."""
        field = self.field(x.shape[2:])
        cp = field.random_points(x.shape[0], x.device)
        with untracked_batch_stats(net):
            with torch.no_grad(), autocast(x.device, self.ctx.amp_dtype):
                p_clean = F.softmax(net(x).float(), dim=1)
            for _ in range(int(self.hp["steps"])):
                cp = cp.detach().requires_grad_(True)
                xb = self.biased(x, cp)
                with autocast(x.device, self.ctx.amp_dtype):    # autocast for the net only, not the field
                    logits = net(xb)
                grad, = torch.autograd.grad(self.distance(logits, p_clean), cp)
                cp = unit_normalize(cp.detach() + self.hp["step_size"] * unit_normalize(grad))
        return cp.detach()

    def train_batch(self, net, x, y):
        """The clean batch for the loop's forward; the adversarial one waits for `loss`."""
        self._adv = self.biased(x, self.adversarial_points(net, x)).detach() if self.hp["lambda_cons"] > 0 else None
        return x, y

    def loss(self, net, x, y, logits):
        """The loop's loss on the clean batch, plus lambda_cons x D(f(x_adv), f(x)) with the
        adversarial forward in training mode, updating no BatchNorm buffer."""
        loss = super().loss(net, x, y, logits)
        adv, self._adv = self._adv, None
        if adv is None:
            return loss
        with untracked_batch_stats(net):
            adv_logits = net(adv)
        p_clean = F.softmax(logits.detach().float(), dim=1)
        return loss + self.hp["lambda_cons"] * self.distance(adv_logits, p_clean)


def _sobel_kernels(device) -> torch.Tensor:
    """The three 3-D Sobel kernels, one per axis: [1, 0, -1] along it, [1, 2, 1] along the
    others (the original's 2-D pair, [[1, 0, -1], [2, 0, -2], [1, 0, -1]] and its transpose)."""
    d = torch.tensor([1.0, 0.0, -1.0], device=device)
    m = torch.tensor([1.0, 2.0, 1.0], device=device)
    axes = [(d, m, m), (m, d, m), (m, m, d)]
    return torch.stack([torch.einsum("i,j,k->ijk", *a) for a in axes])[:, None]     # (3, 1, 3, 3, 3)


def contour_distance(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The original's contour loss between foreground probability maps q (prediction) and p
    (reference), (N, C, D, H, W): per class and axis the mean squared difference of their Sobel
    gradients (zero padding), averaged over axes and classes."""
    n, c = q.shape[:2]
    k = _sobel_kernels(q.device)
    gq = F.conv3d(q.reshape(n * c, 1, *q.shape[2:]).float(), k, padding=1)
    gp = F.conv3d(p.reshape(n * c, 1, *p.shape[2:]).float(), k, padding=1)
    return F.mse_loss(gq, gp)
