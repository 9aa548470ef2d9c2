"""Heavy augmentation: nnU-Net v2's `nnUNetTrainerDA5` pipeline adapted to dgbench (Isensee et al., Nature Methods 2021).

Replaces the standard intensity transforms; the standard geometry (flips where allowed, affine)
stays. Order of the per-sample CPU pipeline:
  standard flips -> DA5 geometry -> standard affine -> z-score -> DA5 intensity -> (harness min-max)
Geometry comes before the z-score so that zero padding means "darkest" as in ERM; intensity and
geometry otherwise commute in distribution (DA5's own random locations are uniform anyway).

DA5 geometry: rotation +-30 deg per axis (p 0.4; +-180 deg in-plane only when the patch is more
than 3x anisotropic), per-axis scaling 0.7-1.43 (p 0.2); on datasets without sided labels also
90-degree rotations and transposes among equal-length patch axes (p 0.5 each) and mirroring of
every axis (p 0.5 each). Elastic deformation is off, as in DA5.

DA5 intensity (z-scored data), in order: one of median filter (size 2-8) or Gaussian blur
(sigma 0.3-1.5), each p 0.2 per sample x 0.5 per channel; Gaussian noise (std up to sqrt(0.1),
p 0.1); additive brightness N(0, 0.5) (p 0.1); one of contrast x U(0.5, 2) range-preserving or
not (p 0.2 each); low resolution 0.25-1 (p 0.15); gamma 0.7-1.5 on the inverted image and on the
image, statistics retained (p 0.1 each); blank rectangles (p 0.4); additive brightness gradient
(p 0.3); local gamma (p 0.3); Laplacian sharpening 0.1-1 (p 0.2).

Augmentation strength: every probability above is DA5's published one, which applies at the
reference recipe's aug_prob (0.33); a run with another `aug_prob` scales each of them by
aug_prob / 0.33, capped at 1 (`_common.aug_scale`), so that every method shares one strength.

Cost note: the median filter is scipy's; at 128^3 a size-8 filter takes ~20 s on one core. It
fires on ~5% of samples (as in nnU-Net); `median_max` caps the size if the loader cannot keep up.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as T
from scipy import ndimage

from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import RandImageOp, aug_scale, gaussian_blob, geometric, scaled_prob

IMG, KEYS = ["image"], ["image", "label"]


class RandMedianFilterd(RandImageOp):
    def __init__(self, keys, prob, size=(2, 8)):
        super().__init__(keys, prob)
        self.size = size

    def op(self, img, R):
        s = int(R.randint(self.size[0], self.size[1] + 1))
        return torch.as_tensor(np.stack([ndimage.median_filter(c.numpy(), size=s) for c in img]))


class RandAdditiveBrightnessd(RandImageOp):
    def __init__(self, keys, prob, std=0.5):
        super().__init__(keys, prob)
        self.std = std

    def op(self, img, R):
        return img + float(R.normal(0.0, self.std))


class RandBlankRectanglesd(RandImageOp):
    """1-5 boxes, edge U(max(1, s/10), s/3) per axis, filled with the image mean."""

    def __init__(self, keys, prob, n=(1, 5)):
        super().__init__(keys, prob)
        self.n = n

    def op(self, img, R):
        out = img.clone()
        shape = img.shape[1:]
        for c in range(img.shape[0]):
            fill = float(img[c].mean())
            for _ in range(int(R.randint(self.n[0], self.n[1] + 1))):
                sl = [c]
                for s in shape:
                    e = int(R.randint(max(1, s // 10), max(2, s // 3) + 1))
                    a = int(R.randint(0, s - e + 1))
                    sl.append(slice(a, a + e))
                out[tuple(sl)] = fill
        return out


def _da5_kernel(shape, R):
    """nnU-Net's gradient kernel: a Gaussian blob with centre U(-0.5, 1.5)*s and scale
    exp(U(ln(s/6), ln s)) per axis."""
    loc = [R.uniform(-0.5, 1.5) * s for s in shape]
    scale = [math.exp(R.uniform(math.log(max(1, s // 6)), math.log(s))) for s in shape]
    return gaussian_blob(shape, loc, scale)


class RandBrightnessGradientd(RandImageOp):
    """Additive smooth brightness gradient, strength +-U(1, 5) at its peak."""

    def op(self, img, R):
        out = img.clone()
        for c in range(img.shape[0]):
            k = _da5_kernel(img.shape[1:], R)
            strength = R.uniform(-5, -1) if R.uniform() < 0.5 else R.uniform(1, 5)
            out[c] += k / k.abs().max().clamp_min(1e-8) * strength
        return out


class RandLocalGammad(RandImageOp):
    """Gamma U(0.01, 0.8) or U(1.5, 4), blended in by a smooth kernel (nnU-Net LocalGammaTransform)."""

    def op(self, img, R):
        out = img.clone()
        for c in range(img.shape[0]):
            k = _da5_kernel(img.shape[1:], R)
            k = (k - k.min()) / (k.max() - k.min()).clamp_min(1e-8)
            gamma = R.uniform(0.01, 0.8) if R.uniform() < 0.5 else R.uniform(1.5, 4)
            lo, hi = img[c].min(), img[c].max()
            v = (img[c] - lo) / (hi - lo).clamp_min(1e-8)
            v = v.pow(gamma) * k + v * (1 - k)
            out[c] = v * (hi - lo) + lo
        return out


class RandLaplacianSharpend(RandImageOp):
    """x + strength * (2d x - sum of the 2d face neighbours), clipped to the input range (nnU-Net
    SharpeningTransform)."""

    def __init__(self, keys, prob, strength=(0.1, 1.0)):
        super().__init__(keys, prob)
        self.strength = strength

    def op(self, img, R):
        s = R.uniform(*self.strength)
        nd = img.ndim - 1
        x = img[:, None].float()
        pad = F.pad(x, (1, 1) * nd, mode="replicate")
        lap = 2 * nd * x
        for ax in range(nd):
            for shift in (0, 2):
                sl = [slice(None), slice(None)] + [slice(1, -1)] * nd
                sl[2 + ax] = slice(shift, shift + x.shape[2 + ax])
                lap = lap - pad[tuple(sl)]
        out = (x + s * lap)[:, 0]
        lo = img.amin(dim=tuple(range(1, img.ndim)), keepdim=True)
        hi = img.amax(dim=tuple(range(1, img.ndim)), keepdim=True)
        return torch.maximum(torch.minimum(out, hi), lo)


class RandTransposed(T.RandomizableTransform, T.MapTransform):
    """Swap two equal-length spatial axes of image and label (DA5's transpose)."""

    def __init__(self, keys, prob, pairs):
        T.MapTransform.__init__(self, keys)
        T.RandomizableTransform.__init__(self, prob)
        self.pairs = list(pairs)

    def __call__(self, data):
        d = dict(data)
        self.randomize(None)
        if not self._do_transform or not self.pairs:
            return d
        a, b = self.pairs[int(self.R.randint(len(self.pairs)))]
        for key in self.key_iterator(d):
            d[key] = d[key].transpose(1 + a, 1 + b) if isinstance(d[key], torch.Tensor) \
                else np.swapaxes(d[key], 1 + a, 1 + b)
        return d


def da5_geometry(patch, sided: bool, strength: float = 1.0) -> list:
    """DA5's geometry; `strength` scales every probability (see the module docstring)."""
    def p(q):
        return scaled_prob(q, strength)
    patch = tuple(int(v) for v in patch)
    modes = ("bilinear", "nearest")
    if max(patch) / min(patch) > 3:            # nnU-Net's ANISO_THRESHOLD: in-plane rotation only
        ranges = [0.0, 0.0, 0.0]
        ranges[int(np.argmin(patch))] = math.pi
    else:
        ranges = [math.pi / 6] * 3
    out = [T.RandRotated(KEYS, range_x=ranges[0], range_y=ranges[1], range_z=ranges[2], prob=p(0.4),
                         keep_size=True, mode=modes, padding_mode="zeros"),
           # scaling as an affine (one grid for image and label: MONAI's Zoom resamples the label
           # with floor-nearest and the image half-pixel centred, up to a voxel apart)
           T.RandAffined(KEYS, prob=p(0.2), scale_range=((-0.3, 0.43),) * 3, mode=modes, padding_mode="zeros")]
    if not sided:
        pairs = [(a, b) for a, b in itertools.combinations(range(3), 2) if patch[a] == patch[b]]
        if pairs:
            out += [T.OneOf([T.RandRotate90d(KEYS, prob=p(0.5), max_k=3, spatial_axes=pr) for pr in pairs]),
                    RandTransposed(KEYS, p(0.5), pairs)]
        out += [T.RandFlipd(KEYS, prob=p(0.5), spatial_axis=a) for a in range(3)]
    return out


def da5_intensity(median_max: int = 8, strength: float = 1.0) -> list:
    """DA5's intensity transforms; `strength` scales every probability (see the module docstring)."""
    def p(q):
        return scaled_prob(q, strength)
    return [
        T.OneOf([RandMedianFilterd(IMG, prob=p(0.1), size=(2, median_max)),
                 T.RandGaussianSmoothd(IMG, sigma_x=(0.3, 1.5), sigma_y=(0.3, 1.5), sigma_z=(0.3, 1.5), prob=p(0.1))]),
        T.RandGaussianNoised(IMG, prob=p(0.1), mean=0.0, std=math.sqrt(0.1)),
        RandAdditiveBrightnessd(IMG, prob=p(0.1), std=0.5),
        T.OneOf([T.RandScaleIntensityFixedMeand(IMG, factors=(-0.5, 1.0), preserve_range=True, prob=p(0.2)),
                 T.RandScaleIntensityFixedMeand(IMG, factors=(-0.5, 1.0), preserve_range=False, prob=p(0.2))]),
        T.RandSimulateLowResolutiond(IMG, prob=p(0.15), zoom_range=(0.25, 1.0)),
        T.RandAdjustContrastd(IMG, prob=p(0.1), gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        T.RandAdjustContrastd(IMG, prob=p(0.1), gamma=(0.7, 1.5), invert_image=False, retain_stats=True),
        RandBlankRectanglesd(IMG, prob=p(0.4)),
        RandBrightnessGradientd(IMG, prob=p(0.3)),
        RandLocalGammad(IMG, prob=p(0.3)),
        RandLaplacianSharpend(IMG, prob=p(0.2), strength=(0.1, 1.0)),
    ]


@register_method("heavyaug")
class HeavyAug(Method):
    """nnU-Net DA5 heavy augmentation in place of the standard intensity transforms."""
    revision = 1    # 1: firing probabilities scale with train.aug_prob
    defaults = {"da5_geometry": True, "median_max": 8}

    def augmentation(self, spatial, intensity):
        sided, strength = self.ctx.sided, aug_scale(self.ctx)
        own = da5_geometry(self.ctx.patch_size, sided, strength) if self.hp["da5_geometry"] else []
        return (spatial + own + geometric(intensity) + [T.NormalizeIntensityd(IMG)]
                + da5_intensity(int(self.hp["median_max"]), strength))
