"""Training patches: random crops with foreground oversampling, then the method's augmentation.

Every sample is a pure function of (run seed, global sample index): the case, the crop and
every augmentation draw come from a generator seeded with both. Resuming at step t therefore
continues the exact sample stream without checkpointing any data-loader state.
"""
from __future__ import annotations

import numpy as np
import torch
from monai import transforms as T

from dgbench.data.cache import Prepared


def standard_augmentation(patch, prob: float, sided: bool) -> tuple[list, list]:
    """The reference default augmentation (the MaskGen reference recipe, Diaz et al. 2026) as (spatial, intensity) MONAI transforms.

    Flips and 90° rotations are left out for datasets with sided (left/right) labels."""
    keys, img = ["image", "label"], ["image"]
    spatial = []
    if not sided:
        spatial += [T.RandFlipd(keys, prob=prob, spatial_axis=0),
                    T.RandAxisFlipd(keys, prob=prob),
                    T.RandRotate90d(keys, prob=prob, max_k=3, spatial_axes=(0, 1))]
    intensity = [
        T.RandSimulateLowResolutiond(img, prob=prob, zoom_range=(0.25, 1.0)),
        T.RandGaussianNoised(img, prob=prob, mean=0.0, std=0.1),
        T.RandBiasFieldd(img, prob=prob, degree=3, coeff_range=(0.0, 0.1)),
        T.RandGibbsNoised(img, prob=prob, alpha=(0.0, 0.33)),
        T.RandAdjustContrastd(img, prob=prob, gamma=(0.5, 4.5)),
        T.RandGaussianSmoothd(img, prob=prob, sigma_x=(0.0, 0.1), sigma_y=(0.0, 0.1), sigma_z=(0.0, 0.1)),
        T.RandGaussianSharpend(img, prob=prob, sigma1_x=(0.5, 1.0), sigma1_y=(0.5, 1.0), sigma1_z=(0.5, 1.0),
                               sigma2_x=0.5, sigma2_y=0.5, sigma2_z=0.5, alpha=(10.0, 30.0)),
    ]
    spatial_end = [T.RandAffined(keys, prob=prob, rotate_range=(np.pi / 4,) * 3, shear_range=(0.2,) * 6,
                                 scale_range=(0.2,) * 3, padding_mode="zeros", mode=("bilinear", "nearest"),
                                 spatial_size=tuple(patch))]
    # geometry first (flips), intensity in reference order, affine last (the MaskGen reference recipe's order)
    return spatial, intensity + spatial_end


def crop(vol: np.ndarray, start, size) -> np.ndarray:
    """Crop vol[start:start+size], zero-padding wherever the window leaves the volume."""
    out = np.zeros(size, dtype=vol.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, vol.shape):
        a, b = max(s, 0), min(s + n, dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s, a - s + max(0, b - a)))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def crop_fast(vol: np.ndarray, start, size) -> np.ndarray:
    """`crop`, with one copy (no zero-filled buffer) when the window lies inside the volume."""
    if all(s >= 0 and s + n <= d for s, n, d in zip(start, size, vol.shape)):
        return np.array(vol[tuple(slice(s, s + n) for s, n in zip(start, size))])
    return crop(vol, start, size)


class PatchDataset(torch.utils.data.Dataset):
    """Map-style: item k = the k-th training sample of the run (k = step * batch + i).

    With `transforms` None the loader only crops (train.aug_on = device): item k is the raw
    crop (float32 image as cached, uint8 label) and its index k, which `device_aug` needs to
    draw sample k's augmentation on the device."""

    def __init__(self, prepared: Prepared, case_ids: list[str], patch, seed: int, fg_prob: float,
                 transforms: list | None, length: int):
        self.prepared, self.case_ids = prepared, list(case_ids)
        self.patch, self.seed, self.fg_prob, self.length = tuple(patch), seed, fg_prob, length
        self.transform = None if transforms is None else \
            T.Compose(transforms + [T.ScaleIntensityd(["image"], minv=0.0, maxv=1.0)])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, k, 31337])
        case = self.prepared.case(self.case_ids[rng.integers(len(self.case_ids))])
        shape, patch = np.array(case.image.shape), np.array(self.patch)
        if case.fg and rng.random() < self.fg_prob:
            cls = list(case.fg)[rng.integers(len(case.fg))]
            centre = case.fg[cls][rng.integers(len(case.fg[cls]))]
            start = centre - patch // 2 + rng.integers(-(patch // 4), patch // 4 + 1)
        else:
            start = np.array([rng.integers(0, max(1, d - p + 1)) for d, p in zip(shape, patch)])
        # keep the window inside the volume where it fits (pad only volumes smaller than the patch)
        start = np.where(shape >= patch, np.clip(start, 0, shape - patch), (shape - patch) // 2)
        if self.transform is None:
            image = crop_fast(case.image, start, self.patch)[None].astype(np.float32, copy=False)
            return {"image": torch.from_numpy(image),
                    "label": torch.from_numpy(crop_fast(case.label, start, self.patch)[None]), "index": k}
        sample = {"image": crop(case.image, start, self.patch)[None].astype(np.float32),
                  "label": crop(case.label, start, self.patch)[None].astype(np.float32)}
        self.transform.set_random_state(seed=int(rng.integers(2 ** 31)))
        out = self.transform(sample)
        return {"image": torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32),
                "label": torch.as_tensor(np.asarray(out["label"])).round().long()}
