"""The method plug-in interface: a method changes training only through these hooks.

The base class *is* ERM: every hook is the identity. A method subclasses it, registers with
``@register_method("name")``, declares its hyperparameter ``defaults`` (and optionally a
``search_space`` for sweeps), and overrides the hooks it needs:

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
``supervised_loss(...)``    the loop's loss on the samples to supervise (default: all of them;
                            multi-view methods supervise one view)
``extra_loss(...)``         extra loss terms (consistency losses); None for none
==========================  =================================================================

Randomness: use torch's global generator (``torch.rand`` ...). The loop reseeds it from
(run seed, step) before every step, so a resumed run replays the same draws.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class MethodContext:
    def __init__(self, dataset, train_cfg, device: torch.device, loss_fn=None):
        self.dataset = dataset        # the DatasetAdapter
        self.train = train_cfg        # TrainConfig
        self.device = device
        self.loss_fn = loss_fn        # the loop's supervised loss (MONAI DiceCE)


class Method:
    defaults: ClassVar[dict[str, Any]] = {}
    # Raise when a change alters what the method does with unchanged hyperparameters: it enters
    # the run id, so results made by the old behaviour are never reused as if they were new.
    revision: ClassVar[int] = 0
    search_space: ClassVar[dict[str, list]] = {}

    def __init__(self, hparams: dict | None = None, ctx: MethodContext | None = None):
        self.hp = self.resolve_hparams(hparams)
        self.ctx = ctx

    @classmethod
    def resolve_hparams(cls, hparams: dict | None) -> dict:
        hparams = dict(hparams or {})
        unknown = set(hparams) - set(cls.defaults)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown hyperparameter(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.defaults) or 'none'}")
        return {**cls.defaults, **hparams}

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

    def supervised_loss(self, loss_fn, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`loss_fn` is the loop's DiceCE; `logits`/`y` cover every sample `train_batch` returned."""
        return loss_fn(logits.float(), y)

    def extra_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor):
        return None

    def describe(self) -> dict:
        """Extra facts recorded in the run's spec.json (e.g. extractor weight hashes)."""
        return {}
