"""BigAug, "deep stacked transformation" (Zhang et al., IEEE TMI 2020).

No official code; parameters follow the torchio reimplementation (kari-jg/BigAug_torchio).
Replaces the standard intensity transforms; the standard geometry stays. Per-sample CPU pipeline:
  standard flips -> BigAug geometry -> standard affine -> z-score -> BigAug intensity -> (harness min-max)
Every BigAug transform fires with p 0.5 (at the reference strength, below):
- geometry: rotation +-20 deg per axis; scaling U(0.4, 1.6) per axis; elastic deformation on a
  7^3 control grid with the outer two layers locked, displacements U(-7.5, 7.5) voxels
  (torchio's default 7.5 mm, in voxels here), trilinearly upsampled;
- intensity (z-scored): Gaussian blur sigma U(0.25, 1.5); sharpening b1 + alpha (b1 - b2)
  (sigmas U(0.25, 1.5), alpha U(10, 30)); Gaussian noise std up to 1 (MONAI draws U(0, 1); the
  reimplementation U(0.1, 1)); brightness shift U(-0.1, 0.1); gamma with ln(gamma) U(ln 0.5, ln 4.5);
  intensity perturbation x (1 + s) + t, s, t U(-0.1, 0.1).
Sizes are in voxels (the reimplementation's sigmas are in mm).
Augmentation strength: p 0.5 applies at the reference recipe's aug_prob (0.33); a run with another
`aug_prob` scales it by aug_prob / 0.33, capped at 1 (`_common.aug_scale`), so that every method
shares one strength.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as T
from monai.utils import convert_to_dst_type

from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import RandImageOp, aug_scale, geometric, quiet_warp, scaled_prob

IMG, KEYS = ["image"], ["image", "label"]


class RandLogGammad(RandImageOp):
    """MONAI's range-preserving gamma with a log-uniform gamma."""

    def __init__(self, keys, prob, gamma=(0.5, 4.5)):
        super().__init__(keys, prob)
        self.gamma = gamma

    def op(self, img, R):
        g = math.exp(R.uniform(math.log(self.gamma[0]), math.log(self.gamma[1])))
        return torch.as_tensor(T.AdjustContrast(g)(img))


class RandIntensityPerturbd(RandImageOp):
    """x * (1 + s) + t with s, t ~ U(-r, r)."""

    def __init__(self, keys, prob, r=0.1):
        super().__init__(keys, prob)
        self.r = r

    def op(self, img, R):
        return img * (1 + R.uniform(-self.r, self.r)) + R.uniform(-self.r, self.r)


class RandCoarseElasticd(T.RandomizableTransform, T.MapTransform):
    """Elastic deformation from random displacements on a coarse control grid (torchio's
    RandomElasticDeformation scheme), applied identically to image (linear) and label (nearest)."""

    def __init__(self, keys, prob, n_control: int = 7, locked: int = 2, max_disp: float = 7.5,
                 modes=("bilinear", "nearest")):
        T.MapTransform.__init__(self, keys)
        T.RandomizableTransform.__init__(self, prob)
        self.n_control, self.locked, self.max_disp = n_control, locked, max_disp
        self.warps = [quiet_warp(mode=m, padding_mode="zeros") for m in modes]

    def __call__(self, data):
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        n = self.n_control
        coarse = (self.R.uniform(-1.0, 1.0, size=(3, n, n, n)) * self.max_disp).astype(np.float32)
        k = self.locked
        inner = np.zeros_like(coarse)
        inner[:, k:n - k, k:n - k, k:n - k] = coarse[:, k:n - k, k:n - k, k:n - k]
        for key, warp in zip(self.key_iterator(d), self.warps):
            src = d[key]
            img = src.as_tensor() if hasattr(src, "as_tensor") else torch.as_tensor(np.asarray(src))
            ddf = F.interpolate(torch.from_numpy(inner)[None], size=tuple(img.shape[1:]), mode="trilinear",
                                align_corners=True)
            out = warp(img[None].float(), ddf)[0]
            d[key] = convert_to_dst_type(out, src)[0]
        return d


def bigaug_geometry(strength: float = 1.0) -> list:
    p = scaled_prob(0.5, strength)
    deg20 = math.radians(20)
    return [T.RandRotated(KEYS, range_x=deg20, range_y=deg20, range_z=deg20, prob=p, keep_size=True,
                          mode=("bilinear", "nearest"), padding_mode="zeros"),
            # scaling as an affine: one sampling grid for image and label (see heavyaug.da5_geometry)
            T.RandAffined(KEYS, prob=p, scale_range=(0.6,) * 3, mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandCoarseElasticd(KEYS, prob=p)]


def bigaug_intensity(strength: float = 1.0) -> list:
    p = scaled_prob(0.5, strength)
    s = (0.25, 1.5)
    return [T.RandGaussianSmoothd(IMG, sigma_x=s, sigma_y=s, sigma_z=s, prob=p),
            T.RandGaussianSharpend(IMG, sigma1_x=s, sigma1_y=s, sigma1_z=s, sigma2_x=s, sigma2_y=s, sigma2_z=s,
                                   alpha=(10.0, 30.0), prob=p),
            T.RandGaussianNoised(IMG, prob=p, mean=0.0, std=1.0),
            T.RandShiftIntensityd(IMG, offsets=0.1, prob=p),
            RandLogGammad(IMG, prob=p),
            RandIntensityPerturbd(IMG, prob=p)]


@register_method("bigaug")
class BigAug(Method):
    """Nine stacked transforms, each with p 0.5 (at aug_prob 0.33), in place of the standard
    intensity transforms."""
    revision = 1    # 1: firing probabilities scale with train.aug_prob
    defaults = {"bigaug_geometry": True}

    def augmentation(self, spatial, intensity):
        strength = aug_scale(self.ctx)
        own = bigaug_geometry(strength) if self.hp["bigaug_geometry"] else []
        return (spatial + own + geometric(intensity) + [T.NormalizeIntensityd(IMG)]
                + bigaug_intensity(strength))
