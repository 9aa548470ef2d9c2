"""The embedded synthetic DG benchmark: procedural anatomy rendered in four domains.

Anatomy (deterministic from a case seed): a body (fat rim around soft tissue) holding a
large organ ("liver"), a pair of small organs ("kidneys"), a curved tube ("aorta") and a
mid-sized organ on the other side ("spleen"), all warped by a smooth random deformation.

Domains (fixed before any method was compared; see README "The embedded benchmark"):
- ``ct``          source. CT in Hounsfield units, contrast-enhanced, 1.5 mm isotropic.
- ``mri``         MRI-like contrast with a partly inverted ordering (fat brightest, aorta dark),
                  multiplicative bias field, Rician noise, arbitrary units.
- ``ct-scanner2`` another hospital's CT: low dose (3.5x noise), a smooth reconstruction kernel,
                  late contrast phase and beam-hardening cupping.
- ``ct-thick``    the source contrast acquired as thick slices: 8 mm along z (4x anisotropic,
                  partial-volume averaging), resampled back to 2 mm at preparation.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

GENERATOR_VERSION = "synth-v1"
SHAPE = (48, 48, 48)
SPACING = (2.0, 2.0, 2.0)
CLASSES = {0: "background", 1: "liver", 2: "kidneys", 3: "aorta", 4: "spleen"}
# tissue codes used for rendering: 0 air, 1 fat, 2 soft tissue, 3.. = class (code - 2)
N_TISSUE = 7

# mean intensity per tissue (air, fat, soft, liver, kidney, aorta, spleen) for each domain
CONTRASTS = {
    "ct":          np.array([-1000.0, -100.0, 40.0, 110.0, 180.0, 280.0, 140.0]),
    "mri":         np.array([0.0, 800.0, 300.0, 450.0, 250.0, 80.0, 330.0]),
    "ct-scanner2": np.array([-1000.0, -110.0, 45.0, 120.0, 200.0, 160.0, 125.0]),
    "ct-thick":    np.array([-1000.0, -100.0, 40.0, 110.0, 180.0, 280.0, 140.0]),
}
DOMAIN_MODALITY = {"ct": "ct", "mri": "mr", "ct-scanner2": "ct", "ct-thick": "ct"}
THICK_FACTOR = 4


def smooth_noise(rng: np.random.Generator, shape, coarse: int, amp: float) -> np.ndarray:
    """Smooth random field: Gaussian noise on a coarse grid, cubic-upsampled, scaled to `amp` s.d."""
    small = rng.standard_normal((coarse,) * len(shape))
    field = ndimage.zoom(small, [s / coarse for s in shape], order=3)
    field = field[tuple(slice(0, s) for s in shape)]
    return field / (field.std() + 1e-8) * amp


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    a, b, c = rng.uniform(-max_angle, max_angle, 3)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _ellipsoid(grid: np.ndarray, centre, radii, rot: np.ndarray) -> np.ndarray:
    p = np.tensordot(rot.T, grid - np.asarray(centre)[:, None, None, None], axes=1)
    return ((p / np.asarray(radii)[:, None, None, None]) ** 2).sum(0) <= 1.0


def make_tissue_map(seed: int, shape=SHAPE) -> np.ndarray:
    """Tissue codes (0 air .. 6 spleen) of one synthetic subject, deterministic from `seed`."""
    rng = np.random.default_rng([seed, 7919])
    axes = [np.linspace(-1, 1, s) for s in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
    warp = np.stack([smooth_noise(rng, shape, 5, 0.06) for _ in range(3)])
    g = grid + warp
    t = np.zeros(shape, np.uint8)
    body_r = np.array([0.9, 0.75, 1.2]) * rng.uniform(0.92, 1.05, 3)
    t[_ellipsoid(g, (0, 0, 0), body_r, np.eye(3))] = 1
    t[_ellipsoid(g, (0, 0, 0), body_r - 0.1, np.eye(3))] = 2
    liver_c = (rng.uniform(0.1, 0.3), rng.uniform(-0.25, 0.0), rng.uniform(-0.15, 0.15))
    liver = _ellipsoid(g, liver_c, rng.uniform([0.32, 0.27, 0.38], [0.42, 0.35, 0.5]), _rotation(rng, 0.5))
    t[liver] = 3
    zc = rng.uniform(-0.2, 0.2)
    for side in (-1, 1):
        c = (side * rng.uniform(0.42, 0.5), rng.uniform(0.25, 0.38), zc + rng.uniform(-0.1, 0.1))
        t[_ellipsoid(g, c, rng.uniform([0.17, 0.14, 0.26], [0.22, 0.18, 0.36]), _rotation(rng, 0.4))] = 4
    # aorta: a tube running along z, its centre wandering smoothly
    amp, freq, phase = rng.uniform(0.03, 0.1), rng.uniform(1.0, 2.5), rng.uniform(0, 2 * np.pi)
    cx = -0.1 + amp * np.sin(freq * g[2] + phase)
    cy = 0.35 + amp * np.cos(freq * g[2] + phase)
    radius = rng.uniform(0.1, 0.13)
    tube = ((g[0] - cx) ** 2 + (g[1] - cy) ** 2 <= radius ** 2) & (np.abs(g[2]) < 0.9)
    t[tube & (t >= 2)] = 5
    spleen_c = (rng.uniform(-0.4, -0.25), rng.uniform(-0.2, 0.0), rng.uniform(-0.15, 0.15))
    spleen = _ellipsoid(g, spleen_c, rng.uniform([0.2, 0.17, 0.28], [0.26, 0.22, 0.36]), _rotation(rng, 0.6))
    t[spleen & (t == 2)] = 6
    return t


def labels_from_tissue(tissue: np.ndarray) -> np.ndarray:
    return np.where(tissue >= 3, tissue - 2, 0).astype(np.uint8)


def render(tissue: np.ndarray, domain: str, seed: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Image, label and spacing of one subject in one domain."""
    rng = np.random.default_rng([seed, sum(map(ord, domain)), 104729])
    means = CONTRASTS[domain] * rng.uniform(0.95, 1.05, N_TISSUE)
    shape = tissue.shape
    img = means[tissue].astype(np.float32)
    label = labels_from_tissue(tissue)
    spacing = SPACING
    if domain == "mri":
        img *= 1.0 + smooth_noise(rng, shape, 4, 0.04) * (tissue > 0)            # texture
        img = ndimage.gaussian_filter(img, 0.6)
        img *= np.exp(smooth_noise(rng, shape, 3, 0.25))                         # bias field
        noise = 30.0
        img = np.sqrt((img + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)
    elif domain == "ct-scanner2":
        img += smooth_noise(rng, shape, 6, 12.0) * (tissue > 0)
        img = ndimage.gaussian_filter(img, 1.2)
        r2 = sum(np.linspace(-1, 1, s)[tuple(slice(None) if i == j else None for j in range(3))] ** 2
                 for i, s in enumerate(shape))
        img -= 60.0 * np.exp(-r2 / 0.5) * (tissue > 0)                           # cupping
        img += rng.normal(0, 70.0, shape)
    else:  # ct, ct-thick
        img += smooth_noise(rng, shape, 6, 12.0) * (tissue > 0)
        img = ndimage.gaussian_filter(img, 0.6)
        img += rng.normal(0, 20.0 if domain == "ct" else 15.0, shape)
        if domain == "ct-thick":
            nz = shape[2] // THICK_FACTOR
            img = img[:, :, : nz * THICK_FACTOR].reshape(shape[0], shape[1], nz, THICK_FACTOR).mean(-1)
            label = label[:, :, THICK_FACTOR // 2::THICK_FACTOR][:, :, :nz]
            spacing = (SPACING[0], SPACING[1], SPACING[2] * THICK_FACTOR)
    if DOMAIN_MODALITY[domain] == "ct":
        img = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    else:
        img = img.astype(np.float32)
    return img, label, spacing
