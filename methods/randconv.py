"""RandConv (Xu et al., ICLR 2021): random convolutions of the input, on the device.

Every view draws a fresh kernel (size uniform from `kernel_sizes`, Kaiming-normal weights, zero
padding), shared by the whole batch. `randconv` (rc_img) keeps the image unchanged with
probability 0.5; `randconv-mix` (rc_mix) blends alpha*conv(x) + (1-alpha)*x. Outputs are mapped
back to [0, 1] per sample.

With consistency (lambda_cons > 0) three views of the clean image are made; the supervised loss
covers the first view only and a KL term pulls every view towards the views' mean prediction
(3 forward/backward passes' worth of compute). As in the original code (wildphoton/RandConv,
randconv_trainer.py `train_one_epoch`: `net(inputs)`, then `net(...)` once for each further
view), every view goes through the network in its own forward pass, so each BatchNorm layer
normalises a view with that view's own batch statistics. The views are stacked for the loss
only (`SeparateViews`). Revision 0 sent the stacked views through the network as one batch,
which mixes the statistics of three different random convolutions in every BatchNorm layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import minmax, view_consistency, view_loss


def random_conv(x: torch.Tensor, kernel_sizes=(1, 3, 5, 7), bias: bool = False) -> tuple[torch.Tensor, int]:
    """conv(x) with one random kernel for the whole batch; returns (output, kernel size)."""
    c, nd = x.shape[1], x.ndim - 2
    k = int(kernel_sizes[torch.randint(len(kernel_sizes), (1,)).item()])
    fan_in = c * k ** nd
    w = torch.randn(c, c, *([k] * nd), device=x.device) / fan_in ** 0.5
    b = (torch.rand(c, device=x.device) * 2 - 1) / fan_in ** 0.5 if bias else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x.float(), w, b, padding=k // 2), k


class SeparateViews(nn.Module):
    """In training, the network on each of `n_views` stacked views in turn (one forward pass per
    view, so BatchNorm's batch statistics are each view's own), the logits stacked again; in
    evaluation, one pass over the batch."""

    def __init__(self, net: nn.Module, n_views: int):
        super().__init__()
        self.net, self.n_views = net, n_views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.n_views == 1:
            return self.net(x)
        return torch.cat([self.net(v) for v in x.chunk(self.n_views)])


@register_method("randconv")
class RandConv(Method):
    """rc_img: with probability `identity_prob` the clean image, else a random convolution of it."""
    defaults = {"kernel_sizes": [1, 3, 5, 7], "mixing": False, "identity_prob": 0.5, "bias": False,
                "lambda_cons": 5.0}
    revision = 1    # 1: one forward pass per view (the original's), not one over the stacked views

    def view(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        if not hp["mixing"] and hp["identity_prob"] > 0 and torch.rand(()).item() < hp["identity_prob"]:
            return x.float()
        out, _ = random_conv(x, tuple(hp["kernel_sizes"]), hp["bias"])
        if hp["mixing"]:
            a = torch.rand((), device=x.device)
            out = a * out + (1 - a) * x.float()
        return minmax(out)

    @property
    def n_views(self) -> int:
        return 3 if self.hp["lambda_cons"] > 0 else 1

    def wrap_network(self, net):
        return SeparateViews(net, self.n_views) if self.n_views > 1 else net

    def train_batch(self, net, x, y):
        n = self.n_views
        views = torch.cat([self.view(x) for _ in range(n)])
        return views, y.repeat(n, *([1] * (y.ndim - 1)))

    def loss(self, net, x, y, logits):
        """The loop's loss on the first view, plus lambda_cons x the KL consistency of the views."""
        n = self.n_views
        loss = view_loss(self.ctx.loss_fn, logits, y, n)
        if n > 1:
            loss = loss + self.hp["lambda_cons"] * view_consistency(logits, n, "to_mean")
        return loss


@register_method("randconv-mix")
class RandConvMix(RandConv):
    """rc_mix: alpha*conv(x) + (1-alpha)*x with alpha ~ U(0, 1) redrawn with every kernel."""
    defaults = {**RandConv.defaults, "mixing": True, "identity_prob": 0.0, "lambda_cons": 10.0}
