"""AdvBias: adversarial bias-field augmentation (Chen et al., MICCAI 2020), 3-D.

The bias field: Gaussian control points (spacing 32 at half resolution, one extra point beyond
each border, L2-normalised per sample), order-3 B-spline interpolation, exponentiated and
rescaled into [1 - eps, 1 + eps], multiplied with the image (then min-max to [0, 1], our range).

Per batch, on the device: predict the clean image (no gradients), then `steps` rounds of gradient
ascent on the control points to maximise KL(p_clean || p_biased): step along the L2-normalised
gradient, re-normalise. The search runs the net in training mode (the same batch-statistics
forward as the training step) but restores every buffer afterwards, so BatchNorm running
statistics never see the adversarial search; only the control points get gradients.

The network then trains on [clean; adversarial] stacked: supervised loss on both (or only the
adversarial half with supervise="adv") plus a consistency term between the two predictions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dgbench.amp import autocast
from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import (SmoothField, frozen_buffers, minmax, unit_normalize, view_consistency,
                                     view_loss)


@register_method("advbias")
class AdvBias(Method):
    """Adversarial bias field: +1 clean forward, `steps` x (forward + input backward), 2x training batch."""
    defaults = {"epsilon": 0.3, "spacing": 32, "downscale": 2, "order": 3, "steps": 1, "step_size": 1.0,
                "lambda_cons": 1.0, "supervise": "both"}

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        if self.hp["supervise"] not in ("both", "adv"):
            raise ValueError(f"advbias: supervise must be both or adv, got {self.hp['supervise']!r}")
        self._fields: dict = {}

    def field(self, size) -> SmoothField:
        size = tuple(int(s) for s in size)
        if size not in self._fields:
            self._fields[size] = SmoothField(size, self.hp["spacing"], self.hp["order"], self.hp["downscale"])
        return self._fields[size]

    def biased(self, x: torch.Tensor, cp: torch.Tensor) -> torch.Tensor:
        return minmax(x.float() * self.field(x.shape[2:]).multiplicative(cp, self.hp["epsilon"]))

    def adversarial_points(self, net, x: torch.Tensor) -> torch.Tensor:
        """Control points after `steps` gradient-ascent steps on KL(p_clean || p_biased)."""
        field = self.field(x.shape[2:])
        cp = field.random_points(x.shape[0], x.device)
        with frozen_buffers(net):
            with torch.no_grad(), autocast(x.device, self.ctx.amp_dtype):
                p_clean = F.softmax(net(x).float(), dim=1)
            for _ in range(int(self.hp["steps"])):
                cp = cp.detach().requires_grad_(True)
                xb = self.biased(x, cp)
                with autocast(x.device, self.ctx.amp_dtype):    # autocast for the net only, not the field
                    logits = net(xb)
                logp = F.log_softmax(logits.float(), dim=1)
                div = F.kl_div(logp, p_clean, reduction="none").sum(1).mean()
                grad, = torch.autograd.grad(div, cp)
                cp = unit_normalize(cp.detach() + self.hp["step_size"] * unit_normalize(grad))
        return cp.detach()

    def train_batch(self, net, x, y):
        cp = self.adversarial_points(net, x)
        x_adv = self.biased(x, cp).detach()
        return torch.cat([x.float(), x_adv]), torch.cat([y, y])

    def loss(self, net, x, y, logits):
        """The loop's loss on both halves (or the adversarial one), plus lambda_cons x the KL
        consistency of the two predictions."""
        if self.hp["supervise"] == "adv":
            loss = view_loss(self.ctx.loss_fn, logits, y, 2, view=1)
        else:
            loss = super().loss(net, x, y, logits)
        if self.hp["lambda_cons"] > 0:
            loss = loss + self.hp["lambda_cons"] * view_consistency(logits, 2, "to_mean")
        return loss
