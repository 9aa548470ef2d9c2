"""GIN and GIN+IPA (Ouyang et al., IEEE TMI 2022), batched on the device.

GIN: a random shallow conv net, redrawn on every call and per sample (one grouped convolution
over the batch), mixed with the input and rescaled to the input's Frobenius norm. We use one
channel (C = 1): the network input and evaluation stay the plain image, as for ERM.

Output range, as the original code has it (cheng-01037/Causality-Medical-Image-Domain-Generalization):
its data loaders z-score every image (dataloaders/abd_dataset_utils.py `get_normalize_op`: CT by
the training set's mean/std, MR per volume; ProstateDataset.py per volume); GIN
(models/imagefilter.py, imagefilter3d.py `GINGroupConv*.forward`, out_norm 'frob') rescales the
mix to the z-scored input's Frobenius norm and the result goes to the segmenter as it is, with no
clipping or min-max (models/exp_trainer.py `set_input_aug_sup`; `to01` is for visualisation only);
at test time the segmenter sees the z-scored image. Our segmenter's frame is the min-max [0, 1]
image instead, so a GIN view here is: z-score the patch per sample (mean m, std s), GIN with the
Frobenius rescale in that z frame, then map back with x = z * s + m. In its frame the network
thus sees what the original's network sees in its own: views with the input's energy about the
input's mean, any sign, offset or range; no min-max (which would undo the Frobenius rescale).
The z-score is per patch (the original's statistics are per volume or per training set).

GIN+IPA: three GIN views; views 1 and 2 swap two of them under a smooth random mask; view 3 is
plain GIN. The three views go through the network as one stacked batch (the original's trick);
the supervised loss covers view 1 only and a KL term ties the views' predictions together.
The KL term is scaled as the original's `torch.nn.KLDivLoss()` (reduction "mean" over every
element, class axis included: the per-voxel KL / C), with its weight lambda_cons = 10
(configs_exp.py `lambda_consist`). Plain GIN with views = 3 is the original's `exp_type = 'gin'`
experiment: `set_input_aug_sup` stacks three GIN views (IPA's blending only when 'ipa' is in
exp_type) and `optimize_parameters` always adds the same consistency term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import SmoothField, minmax, view_consistency, view_loss

_EPS = 1e-8


def gin_net(x: torch.Tensor, n_layers: int = 4, interm: int = 2, kernel_sizes=(1, 3)) -> torch.Tensor:
    """The random shallow network's output for x (B, C, *spatial), before mixing and rescaling.

    Layer l draws its kernel size from `kernel_sizes` (shared by the batch, as in the original),
    its weights and biases from N(0, 1) per sample; leaky ReLU after every layer but the last."""
    b, c = x.shape[:2]
    sp = x.shape[2:]
    h = x.float().reshape(1, b * c, *sp)
    cin = c
    for layer in range(n_layers):
        cout = c if layer == n_layers - 1 else interm
        k = int(kernel_sizes[torch.randint(len(kernel_sizes), (1,)).item()])
        w = torch.randn(b * cout, cin, *([k] * len(sp)), device=x.device)
        bias = torch.randn(b * cout, device=x.device)
        h = F.conv3d(h, w, bias, padding=k // 2, groups=b)
        if layer < n_layers - 1:
            h = F.leaky_relu(h, 0.01)
        cin = cout
    return h.reshape(b, c, *sp)


def gin_transform(x: torch.Tensor, n_layers: int = 4, interm: int = 2, kernel_sizes=(1, 3),
                  alpha: torch.Tensor | None = None) -> torch.Tensor:
    """One GIN view of x: alpha * gin_net(x) + (1 - alpha) * x with alpha ~ U(0, 1) per sample,
    rescaled to x's Frobenius norm per sample (the original's out_norm "frob")."""
    b = x.shape[0]
    h = gin_net(x, n_layers, interm, kernel_sizes)
    if alpha is None:
        alpha = torch.rand(b, device=x.device)
    alpha = alpha.view(b, *([1] * (x.ndim - 1)))
    mixed = alpha * h + (1 - alpha) * x.float()
    norm_in = x.float().flatten(1).norm(dim=1)
    norm_out = mixed.flatten(1).norm(dim=1)
    return mixed * (norm_in / (norm_out + 1e-5)).view(b, *([1] * (x.ndim - 1)))


def gin_view(x: torch.Tensor, n_layers: int = 4, interm: int = 2, kernel_sizes=(1, 3)) -> torch.Tensor:
    """One GIN view of x in x's own intensity frame: z-score per sample, `gin_transform` (so the
    view has the z-scored input's Frobenius norm), undo the z-score (see the module docstring)."""
    x = x.float()
    dims = tuple(range(1, x.ndim))
    m = x.mean(dim=dims, keepdim=True)
    s = x.std(dim=dims, keepdim=True, unbiased=False).clamp_min(_EPS)
    return gin_transform((x - m) / s, n_layers, interm, kernel_sizes) * s + m


class _GinBase(Method):
    revision = 1    # 1: no min-max after the Frobenius rescale; IPA's KL as KLDivLoss 'mean'
    n_views = 3     # stacked views per batch; view 1 is supervised

    def gin_view(self, x):
        hp = self.hp
        return gin_view(x, hp["n_layers"], hp["interm_channels"], tuple(hp["kernel_sizes"]))

    def loss(self, net, x, y, logits):
        """The loop's loss on view 1, plus lambda_cons x the KL consistency with more than one view."""
        loss = view_loss(self.ctx.loss_fn, logits, y, self.n_views)
        if self.n_views > 1:
            loss = loss + self.hp["lambda_cons"] * view_consistency(logits, self.n_views, "from_mean",
                                                                    classes="mean")
        return loss


@register_method("gin")
class GIN(_GinBase):
    """Random shallow-network intensity views (GIN) as the training input; views > 1 adds consistency.

    With views > 1 the views are stacked, view 1 is supervised and GIN-IPA's consistency term ties
    them; views = 1 is a pure input transform. Default 3 views: the original's 'gin' experiment
    (models/exp_trainer.py `set_input_aug_sup`, `range(3)`; see the module docstring)."""
    defaults = {"n_layers": 4, "interm_channels": 2, "kernel_sizes": [1, 3], "views": 3, "lambda_cons": 10.0}

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        self.n_views = int(self.hp["views"])
        if self.n_views < 1:
            raise ValueError(f"gin: views must be >= 1, got {self.hp['views']}")

    def train_batch(self, net, x, y):
        n = self.n_views
        views = torch.cat([self.gin_view(x) for _ in range(n)])
        return views, y.repeat(n, *([1] * (y.ndim - 1)))


@register_method("gin-ipa")
class GinIPA(_GinBase):
    """GIN + interventional pseudo-correlation augmentation with its consistency loss."""
    defaults = {"n_layers": 4, "interm_channels": 2, "kernel_sizes": [1, 3], "lambda_cons": 10.0,
                "grid_spacing": 24, "downscale": 2, "order": 2, "epsilon": 0.3}

    def blend_mask(self, batch: int, size, device) -> torch.Tensor:
        """Smooth random mask in [0, 1] per sample: (B, 1, *size). As in the GIN-IPA code (Ouyang et al. 2022):
        exp(field) rescaled into [1 - epsilon, 1 + epsilon], then min-max; so epsilon cancels."""
        hp = self.hp
        field = SmoothField(size, hp["grid_spacing"], hp["order"], hp["downscale"])
        return minmax(field.multiplicative(field.random_points(batch, device), hp["epsilon"]))

    def train_batch(self, net, x, y):
        g1, g2, g3 = (self.gin_view(x) for _ in range(3))
        m = self.blend_mask(x.shape[0], x.shape[2:], x.device)
        v1 = g1 * m + g2 * (1 - m)
        v2 = g1 * (1 - m) + g2 * m
        views = torch.cat([v1, v2, g3])
        return views, y.repeat(3, *([1] * (y.ndim - 1)))
