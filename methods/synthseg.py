"""Label-to-image synthesis, SynthSeg-style (Billot et al., MedIA 2023), on the device.

The CPU pipeline keeps only the standard geometric augmentation (flips where allowed, affine):
the image is about to be replaced, so the standard intensity transforms would be wasted work.
In `train_batch`, per sample and in SynthSeg's order:
1. a non-linear deformation of the label patch (a smooth random velocity field on a grid of
   0.04 x the patch, std up to 3 voxels, integrated by scaling and squaring; nearest for the label);
2. a new image from the generation labels: one Gaussian per label (mean U(25, 225), std U(5, 25)).
   The generation labels are the label patch with its background split into `bg_clusters`
   intensity clusters of the (deformed) real image patch (1-D k-means, below), each cluster a
   label of its own;
3. a bias field (N(0, s), s ~ U(0, 0.5), on a grid of 0.025 x the patch, upsampled, exponentiated);
4. clip to [0, 300], min-max, gamma exp(N(0, 0.4));
5. resolution: with probability 0.05 none; else isotropic (probability 0.1) up to `max_res_iso`
   voxels or one random axis up to `max_res_aniso` voxels; blur with sigma 0.75 x thickness
   (jittered x U(1/1.03, 1.03)), downsample to that resolution, resample back;
6. min-max to [0, 1].
Resolutions are in multiples of the dataset's voxel size (SynthSeg's mm values are for 1 mm brains).
The segmentation target stays the (deformed) label patch.

Background clusters: our label maps are incomplete (abdominal organs only: air, fat, muscle, bone
are all "background"), and one Gaussian for all of that teaches the network that whatever is not
an organ is one flat texture. For incomplete label maps the SynthSeg work (Billot et al., MedIA
2023; SynthSeg+, PNAS 2023) adds generation labels for the unlabelled tissue from a clustering of
the real image's intensities there (labels used for generation only, not segmented). Here, per
sample and on the device: 1-D k-means (K = `bg_clusters`, centres started evenly over the
background's intensity range, 20 Lloyd steps; no randomness) on the background voxels of the
real patch (after the geometric augmentation and the deformation, so aligned with the label;
for `synthseg-mix` also after the standard intensity augmentation); cluster 0 keeps label 0,
cluster j > 0 becomes generation label n_classes - 1 + j. Default K = 4 (abdominal CT/MRI: air,
fat, soft tissue/muscle, bone or other bright tissue); K = 1 is plain SynthSeg (one Gaussian for
the whole background).

`synthseg-mix` uses the (deformed) real image instead with probability 0.5 per sample; it keeps
the standard intensity augmentation so its real half matches ERM.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter

from dgbench.method import Method
from dgbench.registry import register_method
from dgbench_methods._common import geometric, minmax, quiet_warp


def _grid(size, factor: float) -> list[int]:
    return [max(2, int(math.ceil(s * factor))) for s in size]


def background_clusters(x: torch.Tensor, y: torch.Tensor, k: int, steps: int = 20) -> torch.Tensor:
    """Per sample, 1-D k-means of x's intensities over the background (y == 0): the cluster index
    0 .. k-1 (darkest first) of every voxel, shaped like y (meaningful on the background only).
    Centres start evenly spaced over the background's range; deterministic."""
    b = x.shape[0]
    v = x.reshape(b, -1).float()
    bg = (y.reshape(b, -1) == 0).float()
    big = torch.finfo(v.dtype).max
    has = bg.sum(1, keepdim=True) > 0
    lo = torch.where(bg > 0, v, big).amin(1, keepdim=True)
    hi = torch.where(bg > 0, v, -big).amax(1, keepdim=True)
    lo, hi = torch.where(has, lo, 0.0), torch.where(has, hi, 0.0)
    centres = lo + (hi - lo) * (torch.arange(k, device=v.device, dtype=v.dtype) + 0.5) / k
    for _ in range(steps + 1):
        centres = centres.sort(1).values
        cut = ((centres[:, 1:] + centres[:, :-1]) / 2).contiguous()
        idx = torch.searchsorted(cut, v.contiguous())            # nearest centre (1-D: between midpoints)
        count = torch.zeros_like(centres).scatter_add_(1, idx, bg)
        total = torch.zeros_like(centres).scatter_add_(1, idx, v * bg)
        centres = torch.where(count > 0, total / count.clamp_min(1), centres)
    return idx.view(y.shape)


@register_method("synthseg")
class SynthSeg(Method):
    """Train on images synthesised from the label patch (random GMM contrast, bias, resolution)."""
    defaults = {"mean_range": [25.0, 225.0], "std_range": [5.0, 25.0],
                "nonlin_std": 3.0, "nonlin_scale": 0.04,
                "bias_std": 0.5, "bias_scale": 0.025, "gamma_std": 0.4,
                "max_res_iso": 4.0, "max_res_aniso": 8.0, "prob_iso": 0.1, "prob_min": 0.05, "blur_range": 1.03,
                "bg_clusters": 4, "p_real": 0.0}

    def __init__(self, hparams, ctx):
        super().__init__(hparams, ctx)
        import warnings
        from monai.networks.blocks import DVF2DDF
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._integrate = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")
        self._warp_img = quiet_warp(mode="bilinear", padding_mode="border")
        self._warp_lab = quiet_warp(mode="nearest", padding_mode="border")

    def augmentation(self, spatial, intensity):
        if self.hp["p_real"] > 0:
            return spatial + intensity
        return spatial + geometric(intensity)

    # steps -------------------------------------------------------------------------------------
    def deform(self, x: torch.Tensor, y: torch.Tensor):
        """Shared random diffeomorphic deformation of image (linear) and label (nearest)."""
        b, size = x.shape[0], x.shape[2:]
        std = torch.rand(b, 1, 1, 1, 1, device=x.device) * self.hp["nonlin_std"]
        svf = torch.randn(b, 3, *_grid(size, self.hp["nonlin_scale"]), device=x.device) * std
        svf = F.interpolate(svf, size=size, mode="trilinear", align_corners=True)
        ddf = self._integrate(svf)
        x = self._warp_img(x.float(), ddf)
        y = self._warp_lab(y.float(), ddf).round().long()
        return x, y

    def generation_labels(self, x: torch.Tensor, y: torch.Tensor):
        """(generation labels, number of generation labels): y with its background split into
        `bg_clusters` intensity clusters of x."""
        n, k = self.ctx.n_classes, int(self.hp["bg_clusters"])
        if k <= 1:
            return y, n
        c = background_clusters(x, y, k)
        return torch.where((y == 0) & (c > 0), n - 1 + c, y), n + k - 1

    def gmm(self, y: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """One Gaussian per generation label of y (labels 0 .. n - 1; n defaults to the classes)."""
        b = y.shape[0]
        n = self.ctx.n_classes if n is None else int(n)
        (m0, m1), (s0, s1) = self.hp["mean_range"], self.hp["std_range"]
        means = m0 + (m1 - m0) * torch.rand(b, n, device=y.device)
        stds = s0 + (s1 - s0) * torch.rand(b, n, device=y.device)
        lab = y.reshape(b, -1).clamp(0, n - 1)
        img = torch.gather(means, 1, lab) + torch.gather(stds, 1, lab) * torch.randn(lab.shape, device=y.device)
        return img.view(y.shape).float()

    def bias(self, img: torch.Tensor) -> torch.Tensor:
        b, size = img.shape[0], img.shape[2:]
        std = torch.rand(b, 1, 1, 1, 1, device=img.device) * self.hp["bias_std"]
        small = torch.randn(b, 1, *_grid(size, self.hp["bias_scale"]), device=img.device) * std
        return img * torch.exp(F.interpolate(small, size=size, mode="trilinear", align_corners=True))

    def contrast(self, img: torch.Tensor) -> torch.Tensor:
        img = minmax(img.clamp(0, 300))
        gamma = torch.exp(self.hp["gamma_std"] * torch.randn(img.shape[0], 1, 1, 1, 1, device=img.device))
        return img.clamp_min(0) ** gamma

    def resolution(self, img: torch.Tensor) -> torch.Tensor:
        """Blur, downsample and resample back, per sample (the low resolution differs per sample)."""
        hp, out = self.hp, []
        size = img.shape[2:]
        for i in range(img.shape[0]):
            u = torch.rand(4).tolist()
            res = [1.0, 1.0, 1.0]
            if u[0] >= hp["prob_min"]:
                if u[1] < hp["prob_iso"]:
                    res = [1.0 + (hp["max_res_iso"] - 1.0) * u[2]] * 3
                else:
                    ax = int(torch.randint(3, (1,)).item())
                    res[ax] = 1.0 + (hp["max_res_aniso"] - 1.0) * u[2]
            if max(res) <= 1.0:
                out.append(img[i:i + 1])
                continue
            thick = [1.0 + (r - 1.0) * float(torch.rand(())) for r in res]
            jitter = math.exp((2 * u[3] - 1) * math.log(hp["blur_range"]))
            sigma = [max(0.75 * t * jitter, 1e-3) if t > 1.0 else 1e-3 for t in thick]
            v = GaussianFilter(3, sigma).to(img.device)(img[i:i + 1])
            low = [max(2, int(round(s / r))) for s, r in zip(size, res)]
            v = F.interpolate(v, size=low, mode="trilinear", align_corners=True)
            out.append(F.interpolate(v, size=size, mode="trilinear", align_corners=True))
        return torch.cat(out)

    def synthesize(self, y: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """A synthetic image from generation labels y (see `generation_labels`)."""
        img = self.gmm(y, n)
        if self.hp["bias_std"] > 0:
            img = self.bias(img)
        img = self.contrast(img)
        img = self.resolution(img)
        return minmax(img)

    def train_batch(self, net, x, y):
        if self.hp["nonlin_std"] > 0:
            x, y = self.deform(x, y)
        img = self.synthesize(*self.generation_labels(x, y))
        if self.hp["p_real"] > 0:
            real = torch.rand(x.shape[0], device=x.device) < self.hp["p_real"]
            img = torch.where(real.view(-1, 1, 1, 1, 1), minmax(x.float()), img)
        return img, y


@register_method("synthseg-mix")
class SynthSegMix(SynthSeg):
    """synth_mix: the real image with probability 0.5, else the synthetic one."""
    defaults = {**SynthSeg.defaults, "p_real": 0.5}
