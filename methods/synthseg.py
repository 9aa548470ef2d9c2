"""Label-to-image synthesis, SynthSeg-style (Billot et al., MedIA 2023; methods.md §4.9), on the device.

The CPU pipeline keeps only the standard geometric augmentation (flips where allowed, affine):
the image is about to be replaced, so the standard intensity transforms would be wasted work.
In `train_batch`, per sample and in SynthSeg's order:
1. a non-linear deformation of the label patch (a smooth random velocity field on a grid of
   0.04 x the patch, std up to 3 voxels, integrated by scaling and squaring; nearest for the label);
2. a new image from the label: one Gaussian per label (mean U(25, 225), std U(5, 25));
3. a bias field (N(0, s), s ~ U(0, 0.5), on a grid of 0.025 x the patch, upsampled, exponentiated);
4. clip to [0, 300], min-max, gamma exp(N(0, 0.4));
5. resolution: with probability 0.05 none; else isotropic (probability 0.1) up to `max_res_iso`
   voxels or one random axis up to `max_res_aniso` voxels; blur with sigma 0.75 x thickness
   (jittered x U(1/1.03, 1.03)), downsample to that resolution, resample back;
6. min-max to [0, 1].
Resolutions are in multiples of the dataset's voxel size (SynthSeg's mm values are for 1 mm brains).

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
from dgbench_methods._common import geometric, minmax, n_classes, quiet_warp


def _grid(size, factor: float) -> list[int]:
    return [max(2, int(math.ceil(s * factor))) for s in size]


@register_method("synthseg")
class SynthSeg(Method):
    """Train on images synthesised from the label patch (random GMM contrast, bias, resolution)."""
    defaults = {"mean_range": [25.0, 225.0], "std_range": [5.0, 25.0],
                "nonlin_std": 3.0, "nonlin_scale": 0.04,
                "bias_std": 0.5, "bias_scale": 0.025, "gamma_std": 0.4,
                "max_res_iso": 4.0, "max_res_aniso": 8.0, "prob_iso": 0.1, "prob_min": 0.05, "blur_range": 1.03,
                "p_real": 0.0}
    search_space = {"p_real": [0.0, 0.5]}

    def __init__(self, hparams=None, ctx=None):
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

    def gmm(self, y: torch.Tensor) -> torch.Tensor:
        b, n = y.shape[0], n_classes(self.ctx, y)
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

    def synthesize(self, y: torch.Tensor) -> torch.Tensor:
        img = self.gmm(y)
        if self.hp["bias_std"] > 0:
            img = self.bias(img)
        img = self.contrast(img)
        img = self.resolution(img)
        return minmax(img)

    def train_batch(self, net, x, y):
        if self.hp["nonlin_std"] > 0:
            x, y = self.deform(x, y)
        img = self.synthesize(y)
        if self.hp["p_real"] > 0:
            real = torch.rand(x.shape[0], device=x.device) < self.hp["p_real"]
            img = torch.where(real.view(-1, 1, 1, 1, 1), minmax(x.float()), img)
        return img, y


@register_method("synthseg-mix")
class SynthSegMix(SynthSeg):
    """synth_mix: the real image with probability 0.5, else the synthetic one."""
    defaults = {**SynthSeg.defaults, "p_real": 0.5}
    search_space = {}
