"""MaskGen and the ablations that fall out of its configuration (Diaz et al. 2026, arXiv 2604.02564).

The segmenter sees [intensity, IN(f(x))]: the image plus the instance-normalised features of a
frozen, domain-stable extractor f (17 channels with a 16-channel extractor). In training, whole
channels are zeroed per sample with probability p and survivors rescaled by 1/(1-p) (dropout
semantics); at inference every channel is fed, unmasked. Features are recomputed inside every
sliding window, so the instance-norm statistics are patch statistics at train and test alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dgbench.amp import autocast
from dgbench.method import Method
from dgbench.models.weights import BUNDLED
from dgbench.registry import register_method


@register_method("maskgen")
class MaskGen(Method):
    """Image + frozen foundation-model features with whole-channel masking (Diaz et al. 2026)."""
    defaults = {
        "p": 0.75,                    # probability of zeroing a channel (per sample, per channel)
        "rescale": True,              # multiply kept channels by 1/(1-p)
        "extractor": BUNDLED,         # the bundled synthanat-v2 (README "Feature extractors")
        "extractor_weights": None,    # path override for the extractor's weight file
        "mask_on": "all",             # which channels may be masked: all | features | intensity
        "intensity": "keep",          # keep | zero (zero = the invariant, features-only predictor)
    }

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        if not 0.0 <= self.hp["p"] < 1.0:
            raise ValueError(f"maskgen: p must be in [0, 1), got {self.hp['p']}")
        if self.hp["mask_on"] not in ("all", "features", "intensity"):
            raise ValueError(f"maskgen: mask_on must be all, features or intensity, got {self.hp['mask_on']!r}")
        if self.hp["intensity"] not in ("keep", "zero"):
            raise ValueError(f"maskgen: intensity must be keep or zero, got {self.hp['intensity']!r}")
        from dgbench.models.extractors import build_extractor
        self.extractor = build_extractor(self.hp["extractor"], self.hp["extractor_weights"])
        self.n_features = self.extractor.out_channels

    def input_channels(self) -> int:
        return 1 + self.n_features

    def frozen_modules(self):
        return [self.extractor]

    def describe(self) -> dict:
        return self.extractor.metadata()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[intensity, IN(f(x))] for x in [0, 1], shape B x 1 x D x H x W; the frozen extractor
        runs under the loop's train.amp (`ctx.amp_dtype`)."""
        with torch.no_grad(), autocast(x.device, self.ctx.amp_dtype):
            f = self.extractor(x)
        f = F.instance_norm(f.float(), eps=1e-5)
        img = torch.zeros_like(x) if self.hp["intensity"] == "zero" else x
        return torch.cat([img, f], dim=1)

    def channel_mask(self, b: int, c: int, device) -> torch.Tensor:
        """B x C x 1 x 1 x 1 multiplier: 0 for masked channels, 1/(1-p) (or 1) for kept ones."""
        p = float(self.hp["p"])
        maskable = torch.ones(c, device=device, dtype=torch.bool)
        if self.hp["mask_on"] == "features":
            maskable[0] = False
        elif self.hp["mask_on"] == "intensity":
            maskable[1:] = False
        keep = torch.rand(b, c, device=device) >= p
        keep = keep | ~maskable
        scale = 1.0 / (1.0 - p) if self.hp["rescale"] else 1.0
        mult = keep.float() * torch.where(maskable, scale, 1.0)
        return mult.view(b, c, 1, 1, 1)

    def train_batch(self, net, x, y):
        z = self.features(x)
        if self.hp["p"] > 0:
            z = z * self.channel_mask(z.shape[0], z.shape[1], z.device)
        return z, y

    def infer_input(self, x):
        return self.features(x)


@register_method("concat")
class Concat(MaskGen):
    """Ablation: image + features, no masking (is the masking needed, or the extra channels?)."""
    defaults = {**MaskGen.defaults, "p": 0.0}


@register_method("features-only")
class FeaturesOnly(MaskGen):
    """Ablation: the invariant predictor - features alone (intensity channel zero), no masking."""
    defaults = {**MaskGen.defaults, "p": 0.0, "intensity": "zero"}


@register_method("features-only-masked")
class FeaturesOnlyMasked(MaskGen):
    """Ablation: features alone with channel masking over the 16 feature channels."""
    defaults = {**MaskGen.defaults, "intensity": "zero", "mask_on": "features"}


@register_method("maskgen-norescale")
class MaskGenNoRescale(MaskGen):
    """Ablation: MaskGen without the 1/(1-p) rescale of kept channels (possible v2 semantics)."""
    defaults = {**MaskGen.defaults, "rescale": False}


@register_method("maskgen-imgonly-mask")
class MaskGenImageOnlyMask(MaskGen):
    """Ablation: mask only the intensity channel; the features are always on."""
    defaults = {**MaskGen.defaults, "mask_on": "intensity"}
