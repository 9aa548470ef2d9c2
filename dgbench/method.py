"""The method plug-in interface: a method changes training only through these hooks.

The base class *is* ERM: every hook is the identity. A method subclasses it, registers with
``@register_method("name")``, declares its hyperparameter ``defaults`` and overrides the hooks
it needs:

==========================  =================================================================
``input_channels()``        channels the backbone receives (1 = intensity only)
``augmentation(sp, it)``    the standard pipeline: spatial + intensity lists -> one list; MONAI
                            transforms per sample on the CPU, or device ops on the batch
                            (train.aug_on; docs/CONTRACTS.md). The harness appends the final
                            per-patch min-max to [0, 1]
``wrap_network(net)``       insert feature modules (MixStyle, DSU) or wrap the backbone
``frozen_modules()``        auxiliary frozen networks (moved to the device; never optimised)
``train_batch(net, x, y)``  on the device, training only: returns the (x, y) fed to the net,
                            e.g. GPU augmentation, feature concatenation + channel masking
``infer_input(x)``          on the device, evaluation only, once per sliding window
``loss(net, x, y, logits)`` the step's loss on what `train_batch` returned (default: the loop's
                            loss on every sample; multi-view methods supervise one view and add
                            a consistency term)
==========================  =================================================================

Every method gets a `MethodContext` (the run's facts: loss, precision, classes, sidedness,
patch, augmentation strength, device) at construction, as ``self.ctx``. A plug-in imports only
the plug-in API: this module, `dgbench.amp`, `dgbench.registry`, `dgbench.models`,
`dgbench.spec.REFERENCE_AUG_PROB` and the shared pieces in ``methods/_common.py``.

Randomness: use torch's global generator (``torch.rand`` ...). The loop reseeds it from
(run seed, step) before every step, so a resumed run replays the same draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from dgbench.spec import merge_hparams


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about its run; the loop builds it (`dgbench.train.Trainer`)."""
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # the loop's loss(logits, y): MONAI DiceCE
    amp_dtype: torch.dtype | None      # autocast dtype of the run's forwards (train.amp); None = fp32
    n_classes: int                     # label classes, background included
    sided: bool                        # left/right labels: no flips or 90° rotations
    patch_size: tuple[int, int, int]   # training patch (train.patch_size)
    aug_prob: float                    # the one augmentation strength (train.aug_prob)
    device: torch.device               # the training device


class Method:
    defaults: ClassVar[dict[str, Any]] = {}
    # Raise when a change alters what the method does with unchanged hyperparameters: it enters
    # the run id, so results made by the old behaviour are never reused as if they were new.
    revision: ClassVar[int] = 0

    def __init__(self, hparams: dict | None, ctx: MethodContext):
        if not isinstance(ctx, MethodContext):
            raise TypeError(f"{type(self).__name__} needs a MethodContext, got {type(ctx).__name__}")
        self.hp = self.resolve_hparams(hparams)
        self.ctx = ctx

    @classmethod
    def resolve_hparams(cls, hparams: dict | None) -> dict:
        return merge_hparams(cls.__name__, cls.defaults, hparams)

    def input_channels(self) -> int:
        return 1

    def augmentation(self, spatial: list, intensity: list) -> list:
        return spatial + intensity

    def wrap_network(self, net: nn.Module) -> nn.Module:
        return net

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def train_batch(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def infer_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The step's loss; `x`, `y` are what `train_batch` returned and `logits` = net(x), under
        the loop's autocast. Default: the loop's loss on every sample."""
        return self.ctx.loss_fn(logits.float(), y)

    def describe(self) -> dict:
        """Extra facts recorded in the run's spec.json (e.g. extractor weight hashes)."""
        return {}
