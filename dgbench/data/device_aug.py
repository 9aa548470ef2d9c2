"""The standard augmentation on the training device, on the collated batch (train.aug_on).

The loader on the CPU only picks the case and crops the patch (`PatchDataset` without
transforms); these ops then augment the batch where the network runs. They are the transforms
of `sampling.standard_augmentation`, in its order, with the same parameter distributions (the
tests compare both, draw by draw, and each op's output against MONAI's for the same draw):
flips, 90° rotations, low-resolution simulation, Gaussian noise, bias field, Gibbs noise,
gamma, smoothing, sharpening, affine; then the per-patch min-max to [0, 1].

Every sample keeps its own draws, and they are an exact function of (run seed, sample index):
`draw` reads a numpy generator seeded with both, and the one field drawn on the device (the
noise) comes from a device generator seeded from that stream. A resumed run replays them.

Parameters are drawn on the CPU (a few numbers per sample); work on voxels runs on the device.
Nothing here reads a device value back to the host: per-sample numbers enter kernels as
Python scalars, and the two small tensors (bias-field coefficients, affine matrices) go over
in pinned memory, without blocking.

Differences from the CPU path, by design:
- A patch whose first two sides differ (HVSMR, 128x160x128) changes shape under an odd 90°
  rotation. The CPU path keeps the rotated shape through the intensity transforms and its
  final RandAffined resamples back to the patch (a centred crop/pad when the affine does not
  fire); here the centred crop/pad follows the rotation at once, so that the batch keeps one
  shape.
- The noise field comes from torch's generator, not numpy's: the same distribution, other numbers.
Methods whose `augmentation` hook adds MONAI transforms of its own (HeavyAug's DA5, BigAug)
have no device port: they keep the per-sample CPU path (see `Trainer` and README "GPU training").
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering
from monai.transforms.utils import create_rotate, create_scale, create_shear

IMG, KEYS = ("image",), ("image", "label")
STREAM_TAG = 27182          # separates these draws from the crop's stream (sampling.PatchDataset)


def to_device(arr, device: torch.device) -> torch.Tensor:
    """A small float32 array onto the device without a host sync (pinned, non-blocking)."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def gaussian_kernel(sigma: float, device, truncated: float = 4.0) -> torch.Tensor:
    """MONAI's erf-approximated 1-D Gaussian (`gaussian_1d`, approx="erf"), built on the device
    from a Python sigma (MONAI's own reads its tail length back from a tensor)."""
    tail = int(max(float(sigma) * truncated, 0.5) + 0.5)
    x = torch.arange(-tail, tail + 1, dtype=torch.float32, device=device)
    t = 0.70710678 / abs(float(sigma))
    return (0.5 * ((t * (x + 0.5)).erf() - (t * (x - 0.5)).erf())).clamp(min=0)


def centre_fit(img: torch.Tensor, shape) -> torch.Tensor:
    """Centred crop/zero-pad of a (C, *spatial) tensor to `shape` (an identity resample)."""
    out = img
    for ax, want in enumerate(shape):
        have = out.shape[1 + ax]
        if have > want:
            a = (have - want) // 2
            out = out.narrow(1 + ax, a, want)
        elif have < want:
            pad = [0, 0] * (out.ndim - 1)
            lo = (want - have) // 2
            pad[2 * (out.ndim - 2 - ax)] = lo
            pad[2 * (out.ndim - 2 - ax) + 1] = want - have - lo
            out = F.pad(out, pad)
    return out


class DeviceOp:
    """One transform. `draw(R)` picks one sample's parameters from a numpy Generator on the CPU
    (None: it does not fire, with probability 1 - prob); `apply(x, y, params)` runs it on the
    batch x (B, 1, *patch) float, y (B, 1, *patch) labels, with params[i] for sample i.
    `keys` says what it moves (as on MONAI's dict transforms), so `geometric()` filters work."""
    keys = IMG

    def __init__(self, prob: float):
        self.prob = float(prob)

    def draw(self, R: np.random.Generator):
        if not R.random() < self.prob:
            return None
        return self.sample(R)

    def sample(self, R: np.random.Generator) -> dict:
        return {}

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: list):
        for i, p in enumerate(params):
            if p is not None:
                xi, yi = self.one(x[i], y[i], p)
                x[i] = xi
                if "label" in self.keys:
                    y[i] = yi
        return x, y

    def one(self, x: torch.Tensor, y: torch.Tensor, p: dict):   # one sample, (C, *spatial)
        raise NotImplementedError

    def __repr__(self) -> str:
        extra = {k: v for k, v in vars(self).items() if k != "prob"}
        return f"{type(self).__name__}(prob={self.prob}, {extra})"


class Flip(DeviceOp):
    """RandFlipd(spatial_axis=axis); axis None: RandAxisFlipd (one axis, uniform)."""
    keys = KEYS

    def __init__(self, prob, axis: int | None = None):
        super().__init__(prob)
        self.axis = axis

    def sample(self, R):
        return {"axis": int(R.integers(3)) if self.axis is None else self.axis}

    def one(self, x, y, p):
        d = (1 + p["axis"],)
        return x.flip(d), y.flip(d)


class Rot90(DeviceOp):
    """RandRotate90d(max_k, spatial_axes): k uniform in 1..max_k."""
    keys = KEYS

    def __init__(self, prob, max_k: int = 3, spatial_axes=(0, 1)):
        super().__init__(prob)
        self.max_k, self.spatial_axes = int(max_k), tuple(spatial_axes)

    def sample(self, R):
        return {"k": int(R.integers(self.max_k)) + 1}

    def one(self, x, y, p):
        dims = (1 + self.spatial_axes[0], 1 + self.spatial_axes[1])
        shape = x.shape[1:]
        x, y = torch.rot90(x, p["k"], dims), torch.rot90(y, p["k"], dims)
        return centre_fit(x, shape), centre_fit(y, shape)


class LowResolution(DeviceOp):
    """RandSimulateLowResolutiond: nearest down to round(side * zoom), trilinear back."""

    def __init__(self, prob, zoom_range=(0.5, 1.0)):
        super().__init__(prob)
        self.zoom_range = tuple(zoom_range)

    def sample(self, R):
        return {"zoom": float(R.uniform(*self.zoom_range))}

    def one(self, x, y, p):
        shape = tuple(x.shape[1:])
        small = tuple(max(1, int(np.round(s * p["zoom"]))) for s in shape)
        down = F.interpolate(x[None], size=small, mode="nearest")
        return F.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0], y


class GaussianNoise(DeviceOp):
    """RandGaussianNoised(mean, std): std uniform in [0, std]; the field from a device generator."""

    def __init__(self, prob, mean: float = 0.0, std: float = 0.1):
        super().__init__(prob)
        self.mean, self.std = float(mean), float(std)

    def sample(self, R):
        return {"std": float(R.uniform(0, self.std)), "seed": int(R.integers(2 ** 62))}

    def one(self, x, y, p):
        g = torch.Generator(device=x.device).manual_seed(p["seed"])
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + (noise * p["std"] + self.mean), y


class BiasField(DeviceOp):
    """RandBiasFieldd(degree, coeff_range): x * exp(sum c_ijk P_i(u) P_j(v) P_k(w)), Legendre
    polynomials on [-1, 1] per axis, i + j + k <= degree, coefficients uniform in coeff_range."""

    def __init__(self, prob, degree: int = 3, coeff_range=(0.0, 0.1)):
        super().__init__(prob)
        self.degree, self.coeff_range = int(degree), tuple(coeff_range)
        d = self.degree
        self.terms = [(i, j, k) for i in range(d + 1) for j in range(d + 1 - i) for k in range(d + 1 - i - j)]
        self._basis: dict = {}

    def sample(self, R):
        return {"coeff": R.uniform(*self.coeff_range, len(self.terms)).tolist()}

    def legendre(self, n: int, device) -> torch.Tensor:
        """(degree + 1, n): P_0..P_degree on linspace(-1, 1, n), cached per size and device."""
        key = (n, str(device))
        if key not in self._basis:
            u = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=device)
            P = [torch.ones_like(u), u]
            for m in range(1, self.degree):
                P.append(((2 * m + 1) * u * P[m] - m * P[m - 1]) / (m + 1))
            self._basis[key] = torch.stack(P[: self.degree + 1]).float()
        return self._basis[key]

    def apply(self, x, y, params):
        idx = [i for i, p in enumerate(params) if p is not None]
        C = np.zeros((len(idx),) + (self.degree + 1,) * 3, dtype=np.float32)
        for n, i in enumerate(idx):
            for (a, b, c), v in zip(self.terms, params[i]["coeff"]):
                C[n, a, b, c] = v
        Px, Py, Pz = (self.legendre(s, x.device) for s in x.shape[2:])
        field = torch.einsum("nijk,ix,jy,kz->nxyz", to_device(C, x.device), Px, Py, Pz)
        for n, i in enumerate(idx):
            x[i] = x[i] * field[n].exp()
        return x, y


class GibbsNoise(DeviceOp):
    """RandGibbsNoised(alpha): k-space cut to a ball of radius (1 - alpha) * max side * sqrt(2)/2
    around the (MONAI-centred) middle of the shifted spectrum."""

    def __init__(self, prob, alpha=(0.0, 1.0)):
        super().__init__(prob)
        self.alpha = tuple(alpha)
        self._dist: dict = {}

    def sample(self, R):
        return {"alpha": float(R.uniform(*self.alpha))}

    def distance(self, shape, device) -> torch.Tensor:
        """Distance of each k-space voxel from MONAI's centre ((n-1)/2 in the shifted layout),
        moved to the unshifted layout of fftn (a permutation: the same mask, no shifts)."""
        key = (tuple(shape), str(device))
        if key not in self._dist:
            grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=device) - (n - 1) / 2
                                     for n in shape], indexing="ij")
            d = torch.sqrt(sum(g ** 2 for g in grids))
            self._dist[key] = torch.fft.ifftshift(d)
        return self._dist[key]

    def one(self, x, y, p):
        shape = tuple(x.shape[1:])
        r = (1 - p["alpha"]) * max(shape) * math.sqrt(2) / 2.0
        dims = tuple(range(1, x.ndim))
        k = torch.fft.fftn(x, dim=dims) * (self.distance(shape, x.device) <= r)
        return torch.fft.ifftn(k, dim=dims, norm="backward").real.to(x.dtype), y


class AdjustContrast(DeviceOp):
    """RandAdjustContrastd(gamma): ((x - min) / (range + 1e-7)) ** gamma * range + min."""

    def __init__(self, prob, gamma=(0.5, 4.5)):
        super().__init__(prob)
        self.gamma = (min(gamma), max(gamma))

    def sample(self, R):
        return {"gamma": float(R.uniform(*self.gamma))}

    def one(self, x, y, p):
        lo = x.amin()
        rng = x.amax() - lo
        return ((x - lo) / (rng + 1e-7)) ** p["gamma"] * rng + lo, y


class GaussianSmooth(DeviceOp):
    """RandGaussianSmoothd(sigma_x, sigma_y, sigma_z): one sigma per axis, each uniform."""

    def __init__(self, prob, sigma_x=(0.25, 1.5), sigma_y=(0.25, 1.5), sigma_z=(0.25, 1.5)):
        super().__init__(prob)
        self.ranges = (tuple(sigma_x), tuple(sigma_y), tuple(sigma_z))

    def sample(self, R):
        return {"sigma": [float(R.uniform(*r)) for r in self.ranges]}

    def one(self, x, y, p):
        ks = [gaussian_kernel(s, x.device) for s in p["sigma"]]
        return separable_filtering(x[None], ks)[0], y


class GaussianSharpen(DeviceOp):
    """RandGaussianSharpend: sigma1 per axis uniform in its range, sigma2 per axis uniform in
    [sigma2, sigma1] (MONAI, when sigma2 is one number), alpha uniform;
    b = G(sigma1) x, out = b + alpha (b - G(sigma2) b)."""

    def __init__(self, prob, sigma1=((0.5, 1.0),) * 3, sigma2=(0.5,) * 3, alpha=(10.0, 30.0)):
        super().__init__(prob)
        self.sigma1, self.sigma2, self.alpha = tuple(map(tuple, sigma1)), tuple(sigma2), tuple(alpha)

    def sample(self, R):
        s1 = [float(R.uniform(*r)) for r in self.sigma1]
        s2 = [float(R.uniform(lo, hi)) for lo, hi in zip(self.sigma2, s1)]
        return {"sigma1": s1, "sigma2": s2, "alpha": float(R.uniform(*self.alpha))}

    def one(self, x, y, p):
        k1 = [gaussian_kernel(s, x.device) for s in p["sigma1"]]
        k2 = [gaussian_kernel(s, x.device) for s in p["sigma2"]]
        b = separable_filtering(x[None], k1)
        return (b + p["alpha"] * (b - separable_filtering(b, k2)))[0], y


class Affine(DeviceOp):
    """RandAffined(rotate_range, shear_range, scale_range; bilinear image, nearest label, zero
    padding): the matrix is MONAI's own (create_rotate @ create_shear @ create_scale, about the
    patch centre), one affine_grid + grid_sample for every sample that fires."""
    keys = KEYS

    def __init__(self, prob, rotate_range=(0.0,) * 3, shear_range=(0.0,) * 6, scale_range=(0.0,) * 3):
        super().__init__(prob)
        self.rotate_range, self.shear_range, self.scale_range = (
            tuple(rotate_range), tuple(shear_range), tuple(scale_range))

    def sample(self, R):
        rotate = [float(R.uniform(-r, r)) for r in self.rotate_range]
        shear = [float(R.uniform(-r, r)) for r in self.shear_range]
        scale = [float(R.uniform(-r, r)) + 1.0 for r in self.scale_range]
        return {"matrix": self.matrix(rotate, shear, scale)}

    @staticmethod
    def matrix(rotate, shear, scale) -> np.ndarray:
        """MONAI's 4x4 (AffineGrid: rotate, shear, then scale; no translation)."""
        a = np.asarray(create_rotate(3, rotate, backend="numpy"))
        a = a @ np.asarray(create_shear(3, shear, backend="numpy"))
        return a @ np.asarray(create_scale(3, scale, backend="numpy"))

    @staticmethod
    def theta(matrix: np.ndarray, shape) -> np.ndarray:
        """MONAI maps output voxel centres c (voxel units about the centre) to A c in the input;
        grid_sample's normalised frame is u = 2c / n per axis, in reversed (x = last) order."""
        n = np.asarray(shape, dtype=np.float64)
        m = np.diag(2 / n) @ np.asarray(matrix, dtype=np.float64)[:3, :3] @ np.diag(n / 2)
        return np.concatenate([m[::-1, ::-1], np.zeros((3, 1))], axis=1)

    def apply(self, x, y, params):
        idx = [i for i, p in enumerate(params) if p is not None]
        shape = tuple(x.shape[2:])
        theta = to_device(np.stack([self.theta(params[i]["matrix"], shape) for i in idx]), x.device)
        xs = torch.cat([x[i:i + 1] for i in idx])
        ys = torch.cat([y[i:i + 1] for i in idx]).float()
        grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
        xs = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        ys = F.grid_sample(ys, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        for n, i in enumerate(idx):
            x[i] = xs[n]
            y[i] = ys[n].to(y.dtype)
        return x, y


def standard_device_augmentation(patch, prob: float, sided: bool) -> tuple[list, list]:
    """`sampling.standard_augmentation` as device ops, with the same parameters and the same
    (spatial, intensity + affine) split, so method hooks rearrange both alike."""
    spatial = []
    if not sided:
        spatial += [Flip(prob, axis=0), Flip(prob), Rot90(prob, max_k=3, spatial_axes=(0, 1))]
    intensity = [
        LowResolution(prob, zoom_range=(0.25, 1.0)),
        GaussianNoise(prob, mean=0.0, std=0.1),
        BiasField(prob, degree=3, coeff_range=(0.0, 0.1)),
        GibbsNoise(prob, alpha=(0.0, 0.33)),
        AdjustContrast(prob, gamma=(0.5, 4.5)),
        GaussianSmooth(prob, sigma_x=(0.0, 0.1), sigma_y=(0.0, 0.1), sigma_z=(0.0, 0.1)),
        GaussianSharpen(prob, sigma1=((0.5, 1.0),) * 3, sigma2=(0.5,) * 3, alpha=(10.0, 30.0)),
    ]
    spatial_end = [Affine(prob, rotate_range=(np.pi / 4,) * 3, shear_range=(0.2,) * 6, scale_range=(0.2,) * 3)]
    return spatial, intensity + spatial_end


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max to [0, 1]; a constant patch becomes 0 (MONAI ScaleIntensity)."""
    dims = tuple(range(1, x.ndim))
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 0.0)


class DeviceAugmentation:
    """The ops of a pipeline on a batch, then the per-patch min-max; sample k's draws come from
    numpy's Generator seeded with (seed, k), whatever batch it sits in."""

    def __init__(self, ops: list, seed: int):
        bad = [type(t).__name__ for t in ops if not isinstance(t, DeviceOp)]
        if bad:
            raise TypeError(f"not device ops: {bad}")
        self.ops, self.seed = list(ops), int(seed)

    def draw(self, indices) -> list[list]:
        """params[op][sample] for the given global sample indices."""
        rows = []
        for k in indices:
            R = np.random.default_rng([self.seed, int(k), STREAM_TAG])
            rows.append([op.draw(R) for op in self.ops])
        return [list(col) for col in zip(*rows)] if rows else [[] for _ in self.ops]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, *patch) crops as cached, y (B, 1, *patch) labels (any integer type, kept);
        returns new tensors, the inputs untouched."""
        x = x.to(torch.float32, copy=True)
        y = y.clone()
        for op, params in zip(self.ops, self.draw(indices)):
            if any(p is not None for p in params):
                x, y = op.apply(x, y, params)
        return minmax(x), y
