"""Frozen feature extractors for MaskGen-style methods, looked up by name.

Registered names (see `build_extractor`):
  anatomix               the published anatomix weights (Dey et al., ICLR 2025, MIT licence);
                         the file is verified by its git blob SHA-1 before use.
  synthanat-v2           dgbench's own small extractor of the same architecture family
                         (U-Net with 4 levels, width 8, affine instance norm), pretrained with
                         `dgbench pretrain-features` on procedural label maps at 32-64^3 and
                         shipped inside the package. The name says what it is - synthetic-anatomy
                         pretraining - and keeps it from being mistaken for the published anatomix
                         weights. It exists so that MaskGen runs offline, in tests and on a CPU.
                         Its stability gate: benchmarks/feature_stability.py.
  synthanat-tiny         the first bundled extractor (BatchNorm, 4 levels, width 6, 32^3 only),
                         kept for comparison: its features collapse at 48^3 and above.
  anatomix-random        an architecture with fixed-seed random (Kaiming) weights:
  synthanat-v2-random    explicit "untrained features" controls, never a silent fallback.
  synthanat-tiny-random

Every extractor is wrapped in `FrozenExtractor`: eval mode for every forward pass (the
reference code's `.train()` bug; Diaz et al. 2026), no gradients, and it keeps its weights out
of the parent's checkpoint (they are identified by `weights_sha1` instead). Where the files come
from and how they are verified: dgbench.models.weights (torch-free; the preflight uses it).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dgbench.models.anatomix import Unet, seeded_extractor_net, strip_wrappers
from dgbench.models.weights import BUNDLED_ARCH, ExtractorWeightsError, _bundled_file, anatomix_file
from dgbench.registry import EXTRACTORS, register_extractor

# ---------------------------------------------------------------------------------------------
class FrozenExtractor(nn.Module):
    """A feature network that cannot train: eval mode always, no grads, not checkpointed.

    Input B x 1 x D x H x W in [0, 1] (sides divisible by `size_multiple`, at least twice it);
    output raw features B x `out_channels` x D x H x W (no normalisation: MaskGen applies
    InstanceNorm3d per patch itself).

    - `.train(True)` is ignored (also when a parent module propagates it), and every forward
      pass re-asserts eval mode on each BatchNorm in case something flipped it directly.
    - All parameters have `requires_grad=False`; forward runs under `torch.no_grad()`.
      Callers should still build their optimiser from their own parameters only.
    - When used as a submodule, its keys are dropped from the parent's `state_dict()` and are
      not read from the checkpoint by the parent's (strict) `load_state_dict()`: checkpoints
      stay small and the weights always come from the verified file. Record `metadata()` in
      the run instead. (`self.net.state_dict()` still gives the weights.)
    """

    def __init__(self, net: Unet, name: str, weights_sha1: str | None,
                 weights_path: str | None = None, verified: bool = True,
                 trained_size: int | None = None):
        super().__init__()
        self.trained_size = trained_size  # cube side of the pretraining canvas, if known
        self.net = net
        self.name = name
        self.weights_sha1 = weights_sha1
        self.weights_path = weights_path
        self.weights_verified = verified
        self.out_channels = net.output_nc
        self.size_multiple = net.size_multiple
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._bns = [m for m in self.net.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        super().train(False)
        hook = (getattr(self, "register_state_dict_post_hook", None)
                or self._register_state_dict_hook)
        hook(_drop_own_keys)
        pre = getattr(self, "register_load_state_dict_pre_hook", None)
        if pre is not None:
            pre(_keep_own_weights)
        else:  # older torch
            self._register_load_state_dict_pre_hook(_keep_own_weights, with_module=True)

    def train(self, mode: bool = True) -> "FrozenExtractor":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._bns:
            m.training = False
        with torch.no_grad():
            return self.net(x)

    def metadata(self) -> dict:
        """What a run records instead of the weights themselves."""
        return {"extractor": self.name, "weights_sha1": self.weights_sha1,
                "weights_path": self.weights_path, "weights_verified": self.weights_verified,
                "out_channels": self.out_channels, "trained_size": self.trained_size}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights_sha1={self.weights_sha1!r}"


def _drop_own_keys(module, state_dict, prefix, local_metadata):
    for k in [k for k in state_dict if k.startswith(prefix + "net.")]:
        del state_dict[k]


def _keep_own_weights(module, state_dict, prefix, *args):
    """Parent load: supply (and override) this extractor's keys with its verified weights."""
    for k, v in module.net.state_dict().items():
        state_dict[prefix + "net." + k] = v


# ---------------------------------------------------------------------------------------------
def build_extractor(name: str, weights: str | Path | None = None, *,
                    verify: bool = True) -> FrozenExtractor:
    """Build a registered extractor by name. `weights` overrides where its file comes from.

    `verify=False` accepts a file whose checksum differs from the expected one (for example
    a re-saved anatomix checkpoint); the run then records `weights_verified: False`.
    """
    factory = EXTRACTORS.get(name)
    return factory(weights=weights, verify=verify)


def load_state(path: str | Path) -> dict:
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated download, HTML error page, git-lfs pointer, ...
        raise ExtractorWeightsError(f"cannot read weights file {path}: {e}") from e
    if not isinstance(state, dict):
        raise ExtractorWeightsError(f"{path} does not hold a state_dict (got {type(state)})")
    return strip_wrappers(state)


def unet_from_state(state: dict, output_nc: int | None = None, norm_eps: float = 1e-5) -> Unet:
    """Rebuild the architecture from the shapes in a state_dict (ngf, depth, channels, norm:
    BatchNorm layers carry running statistics, affine InstanceNorm layers do not). The norm's
    eps is not in the weights: it comes from the caller (the sidecar JSON for our own files)."""
    if not any(k.startswith("model.") for k in state):
        raise ExtractorWeightsError("not an anatomix-family state_dict (no 'model.<i>.' keys)")
    convs = sorted((k for k in state if k.endswith(".weight") and state[k].dim() == 5),
                   key=lambda k: int(k.split(".")[1]))
    first, last = state[convs[0]], state[convs[-1]]
    num_downs = (len(convs) - 4) // 4
    norm = "batch" if any(k.endswith("running_mean") for k in state) else "instance"
    net = Unet(input_nc=first.shape[1], output_nc=output_nc or last.shape[0],
               num_downs=num_downs, ngf=first.shape[0], norm=norm, norm_eps=norm_eps)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ExtractorWeightsError(f"state_dict does not fit the anatomix Unet layout: {e}") from e
    return net


@register_extractor("anatomix")
def _anatomix(weights: str | Path | None = None, verify: bool = True) -> FrozenExtractor:
    path, sha, ok = anatomix_file(weights, verify)
    net = unet_from_state(load_state(path))
    if (net.num_downs, net.ngf, net.input_nc, net.output_nc) != (4, 16, 1, 16):
        raise ExtractorWeightsError(f"{path} is not an anatomix Unet(1, 16, num_downs=4, ngf=16)")
    return FrozenExtractor(net, "anatomix", sha, str(path), ok, trained_size=128)


def _bundled(name: str):
    """Factory for a bundled extractor (see _bundled_file); the sidecar also supplies the norm eps."""
    def factory(weights: str | Path | None = None, verify: bool = True) -> FrozenExtractor:
        path, meta, sha, ok = _bundled_file(name, weights, verify)
        eps = meta.get("architecture", {}).get("norm_eps", 1e-5)
        net = unet_from_state(load_state(path), norm_eps=eps)
        arch = BUNDLED_ARCH[name]
        if weights is None and (net.ngf, net.num_downs, net.norm) != (arch["ngf"], arch["num_downs"], arch["norm"]):
            raise ExtractorWeightsError(f"{path} is not the {name} architecture {arch}")
        sizes = meta.get("sizes") or ([meta["size"]] if "size" in meta else None)
        return FrozenExtractor(net, name if weights is None else f"{name}:{path.stem}", sha,
                               str(path), ok, trained_size=max(sizes) if sizes else None)
    return factory


def random_extractor(ngf: int, seed: int = 0, name: str | None = None, num_downs: int = 4,
                     norm: str = "batch", norm_eps: float = 1e-5) -> FrozenExtractor:
    """Kaiming-initialised network of the family (the starting point of pretraining)."""
    net = seeded_extractor_net(seed, ngf, num_downs, norm, norm_eps)
    return FrozenExtractor(net, name or f"random-ngf{ngf}-seed{seed}", None, None, True)


def _random(name: str, **arch):
    def factory(weights=None, verify: bool = True) -> FrozenExtractor:
        if weights is not None:
            raise ValueError(f"{name} takes no weights file")
        return random_extractor(seed=0, name=name, **arch)
    return factory


register_extractor("anatomix-random")(_random("anatomix-random", ngf=16))
for _name, _arch in BUNDLED_ARCH.items():
    register_extractor(_name)(_bundled(_name))
    register_extractor(f"{_name}-random")(_random(f"{_name}-random", **_arch))
