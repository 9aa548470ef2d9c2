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
of the parent's checkpoint (they are identified by `weights_sha1` instead).
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import warnings
from pathlib import Path

import torch
from torch import nn

from dgbench.data.adapter import cache_dir
from dgbench.models.anatomix import Unet, seeded_extractor_net, strip_wrappers
from dgbench.registry import EXTRACTORS, register_extractor

ANATOMIX_URL = ("https://raw.githubusercontent.com/neel-dey/anatomix/main/"
                "model-weights/anatomix.pth")
ANATOMIX_SHA1 = "d13b2f335850a0a3a9042dcaf9a7181631098b80"  # git blob SHA-1 of the published file
ANATOMIX_ENV = "DGBENCH_ANATOMIX_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 30
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUNDLED = "synthanat-v2"          # MaskGen's default extractor
# bundled extractors and the architecture their files must have (their random controls use it)
BUNDLED_ARCH = {"synthanat-v2": {"ngf": 8, "num_downs": 4, "norm": "instance", "norm_eps": 1e-5},
                "synthanat-tiny": {"ngf": 6, "num_downs": 4, "norm": "batch", "norm_eps": 1e-5}}


class ExtractorWeightsError(RuntimeError):
    """Weights are missing, unreachable or fail their checksum. Never answered with random
    weights: a MaskGen run with the wrong features would look valid and be wrong."""


def git_blob_sha1(data_or_path: bytes | str | Path) -> str:
    """SHA-1 of `b"blob <size>\\0" + content` - what `git hash-object` prints (not sha1sum)."""
    data = data_or_path if isinstance(data_or_path, bytes) else Path(data_or_path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def anatomix_cache_path() -> Path:
    return cache_dir() / "anatomix" / "anatomix.pth"


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


def _check_sha(path: Path, expected: str, verify: bool, hint: str) -> tuple[str, bool]:
    actual = git_blob_sha1(path)
    if actual == expected:
        return actual, True
    if not verify:
        warnings.warn(f"{path}: git blob SHA-1 {actual} differs from the expected {expected}; "
                      "used anyway because verify=False (recorded as weights_verified=False)")
        return actual, False
    raise ExtractorWeightsError(
        f"weights file {path} has git blob SHA-1 {actual}, expected {expected} "
        f"(check with `git hash-object {path}`). The file is corrupt, truncated or a different "
        f"checkpoint. {hint}")


def _anatomix_hint() -> str:
    return (f"Download {ANATOMIX_URL} (or Hugging Face neeldey/anatomix, file anatomix.pth) "
            f"and either put it at {anatomix_cache_path()} (the cache; $DGBENCH_CACHE moves it), "
            f"e.g. `curl -L --create-dirs -o {anatomix_cache_path()} {ANATOMIX_URL}`, "
            f"or set {ANATOMIX_ENV}=/path/to/anatomix.pth (offline: copy model-weights/anatomix.pth "
            f"from a clone of neel-dey/anatomix). Expected git blob SHA-1: {ANATOMIX_SHA1}.")


def resolve_anatomix_weights(weights: str | Path | None = None, download: bool = True) -> Path:
    """Explicit path -> $DGBENCH_ANATOMIX_WEIGHTS -> cache -> download into the cache."""
    for source, p in (("argument", weights), (ANATOMIX_ENV, os.environ.get(ANATOMIX_ENV))):
        if p:
            p = Path(p).expanduser()
            if not p.is_file():
                raise ExtractorWeightsError(f"anatomix weights given by {source} not found: {p}. "
                                            + _anatomix_hint())
            return p
    cached = anatomix_cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise ExtractorWeightsError("anatomix weights not found. " + _anatomix_hint())
    try:
        with urllib.request.urlopen(ANATOMIX_URL, timeout=DOWNLOAD_TIMEOUT_S) as r:
            data = r.read()
    except Exception as e:
        raise ExtractorWeightsError(
            f"anatomix weights not found locally and the download failed ({e}). "
            + _anatomix_hint()) from e
    actual = git_blob_sha1(data)
    if actual != ANATOMIX_SHA1:
        raise ExtractorWeightsError(
            f"downloaded {ANATOMIX_URL} but its git blob SHA-1 is {actual}, expected "
            f"{ANATOMIX_SHA1}; not saved. " + _anatomix_hint())
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return cached


@register_extractor("anatomix")
def _anatomix(weights: str | Path | None = None, verify: bool = True) -> FrozenExtractor:
    path = resolve_anatomix_weights(weights)
    sha, ok = _check_sha(path, ANATOMIX_SHA1, verify, _anatomix_hint())
    net = unet_from_state(load_state(path))
    if (net.num_downs, net.ngf, net.input_nc, net.output_nc) != (4, 16, 1, 16):
        raise ExtractorWeightsError(f"{path} is not an anatomix Unet(1, 16, num_downs=4, ngf=16)")
    return FrozenExtractor(net, "anatomix", sha, str(path), ok, trained_size=128)


def check_weights(name: str, weights: str | Path | None = None) -> str:
    """Resolve and verify the weights file that `build_extractor(name, weights)` would load, without
    downloading (a sweep's preflight: the file must be in place before jobs start) and, for anatomix
    and the bundled extractors, without building the network. Returns what was verified; raises
    ExtractorWeightsError (KeyError for an unknown name, ValueError for a weights file given to a
    random control) with the fix."""
    factory = EXTRACTORS.get(name)
    if name == "anatomix":
        path = resolve_anatomix_weights(weights, download=False)
        sha, ok = _check_sha(path, ANATOMIX_SHA1, True, _anatomix_hint())
    elif name in BUNDLED_ARCH:
        path, _, sha, ok = _bundled_file(name, weights, verify=True)
    else:                                    # random controls (cheap) and plug-ins: built
        return factory(weights=weights).metadata().get("weights_path") or "no weights file"
    return f"{path} (git blob SHA-1 {sha[:12]}, " + ("verified)" if ok else "no checksum beside it: not verified)")


def bundled_weights(name: str = BUNDLED) -> tuple[Path, dict]:
    pt, meta = WEIGHTS_DIR / f"{name}.pt", WEIGHTS_DIR / f"{name}.json"
    if not pt.is_file() or not meta.is_file():
        raise ExtractorWeightsError(f"bundled weights {pt} (and {meta.name}) are missing from "
                                    "the package; reinstall dgbench or re-create them with the "
                                    f"command in {WEIGHTS_DIR / (name + '.log')}")
    return pt, json.loads(meta.read_text())


def _bundled_file(name: str, weights: str | Path | None, verify: bool) -> tuple[Path, dict, str, bool]:
    """(path, sidecar metadata, git blob SHA-1, verified) of the file a bundled extractor loads: its
    own by default; `weights` may name any `pretrain-features` output, whose JSON sidecar (same
    stem) supplies the checksum (unverified without one)."""
    if weights is None:
        path, meta = bundled_weights(name)
    else:
        path = Path(weights)
        side = path.with_suffix(".json")
        if not path.is_file():
            raise ExtractorWeightsError(f"weights file not found: {path}")
        meta = json.loads(side.read_text()) if side.is_file() else {}
    expected = meta.get("git_blob_sha1")
    if expected:
        sha, ok = _check_sha(path, expected, verify,
                             f"Re-create it with: {meta.get('command', 'dgbench pretrain-features')}")
    else:
        sha, ok = git_blob_sha1(path), False
    return path, meta, sha, ok


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
