"""Feature-statistics methods inserted into the encoder of any backbone (MixStyle: Zhou et al., ICLR 2021; DSU: Li et al., ICLR 2022).

Both work through forward hooks on the backbone's `encoder_stages` (DSU also on its
`bottleneck`), so they need nothing from the backbone class and leave its state_dict
unchanged. The modules hang off the network as `net.feature_stats`, so `net.train()` /
`net.eval()` switch them; in eval mode they return their input object itself (exact identity).

Small batches: the reference batch is 4 patches, which gives MixStyle few distinct pairs and DSU
a noisy batch variance (3 degrees of freedom); both are properties of the recipe, not bugs.
"""
from __future__ import annotations

import torch
from torch import nn

from dgbench.method import Method
from dgbench.registry import register_method


def _spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


class MixStyle(nn.Module):
    """Mix per-sample channel statistics with those of a random partner (Zhou et al., ICLR 2021;
    random-permutation variant, statistics detached)."""

    def __init__(self, p: float = 0.5, alpha: float = 0.3, eps: float = 1e-6):
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or torch.rand(()).item() >= self.p:
            return x
        b = x.shape[0]
        xf = x.float()
        dims = _spatial_dims(xf)
        mu = xf.mean(dims, keepdim=True).detach()
        sig = (xf.var(dims, keepdim=True) + self.eps).sqrt().detach()
        normed = (xf - mu) / sig
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b,) + (1,) * (x.ndim - 1)).to(xf)
        perm = torch.randperm(b, device=x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (normed * sig_mix + mu_mix).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"


class DSU(nn.Module):
    """Resample per-sample channel statistics from Gaussians whose spread is the batch variance of
    those statistics (Li et al., ICLR 2022). Statistics are not detached."""

    def __init__(self, p: float = 0.5, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or torch.rand(()).item() >= self.p:
            return x
        xf = x.float()
        dims = _spatial_dims(xf)
        mu = xf.mean(dims)                                   # B x C
        sig = (xf.var(dims) + self.eps).sqrt()
        spread_mu = (mu.var(0, keepdim=True) + self.eps).sqrt().expand_as(mu)
        spread_sig = (sig.var(0, keepdim=True) + self.eps).sqrt().expand_as(sig)
        beta = mu + torch.randn_like(mu) * spread_mu
        gamma = sig + torch.randn_like(sig) * spread_sig
        shape = mu.shape + (1,) * len(dims)
        out = (xf - mu.view(shape)) / sig.view(shape) * gamma.view(shape) + beta.view(shape)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _apply_feature_stat(site: nn.Module, _inputs, output):
    return site.__dict__["_dg_feature_stat"](output)


def insert_after(net: nn.Module, sites: list[nn.Module], make) -> nn.Module:
    """Apply a fresh `make()` module to the output of every module in `sites` via forward hooks.

    The hook finds its module through the hooked site (a plain attribute, so the site's own
    forward and state_dict are unchanged), which keeps copies of the net (deepcopy) self-contained."""
    mods = nn.ModuleList()
    for site in sites:
        m = make()
        mods.append(m)
        object.__setattr__(site, "_dg_feature_stat", m)
        site.register_forward_hook(_apply_feature_stat)
    net.feature_stats = mods
    return net


def encoder_stages(net: nn.Module) -> list[nn.Module]:
    stages = getattr(net, "encoder_stages", None)
    if stages is None:
        raise TypeError(f"{type(net).__name__} has no `encoder_stages`; feature-statistics methods need it "
                        f"(see dgbench/models/backbones.py)")
    return list(stages)


@register_method("mixstyle")
class MixStyleMethod(Method):
    """MixStyle after the first `n_stages` encoder levels (never the deepest one, never the decoder)."""
    defaults = {"p": 0.5, "alpha": 0.3, "n_stages": 3}

    def wrap_network(self, net):
        stages = encoder_stages(net)
        n = max(1, min(int(self.hp["n_stages"]), len(stages) - 1))
        return insert_after(net, stages[:n], lambda: MixStyle(self.hp["p"], self.hp["alpha"]))


@register_method("dsu")
class DSUMethod(Method):
    """DSU after every encoder level and (by default) after the bottleneck."""
    defaults = {"p": 0.5, "bottleneck": True}

    def wrap_network(self, net):
        sites = encoder_stages(net)
        if self.hp["bottleneck"]:
            bottleneck = getattr(net, "bottleneck", None)
            if not isinstance(bottleneck, nn.Module):
                raise TypeError(f"{type(net).__name__} has no `bottleneck` module; backbones expose one "
                                f"(dgbench/models/backbones.py), or run dsu with --hparam bottleneck=false")
            sites.append(bottleneck)
        return insert_after(net, sites, lambda: DSU(self.hp["p"]))
