"""Extractor weights files, without torch: where each file comes from, its checksum, and the
check a sweep's preflight makes before any job starts (``check_weights``). The networks that load
these files live in dgbench.models.extractors (which imports torch); this module must not.

  anatomix        the published file, verified by its git blob SHA-1 (ANATOMIX_SHA1): an explicit
                  path, $DGBENCH_ANATOMIX_WEIGHTS, the cache, or a download into the cache.
  synthanat-*     files bundled in WEIGHTS_DIR (or any `pretrain-features` output) whose JSON
                  sidecar carries the checksum and the architecture.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import warnings
from pathlib import Path

from dgbench.data.adapter import cache_dir

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


def anatomix_file(weights: str | Path | None = None, verify: bool = True,
                  download: bool = True) -> tuple[Path, str, bool]:
    """(path, git blob SHA-1, verified) of the anatomix file that ``weights`` (or the environment,
    the cache, a download) gives; ExtractorWeightsError with the fix when it is missing or, with
    ``verify``, its checksum is not ANATOMIX_SHA1."""
    path = resolve_anatomix_weights(weights, download=download)
    sha, ok = _check_sha(path, ANATOMIX_SHA1, verify, _anatomix_hint())
    return path, sha, ok


def check_weights(name: str, weights: str | Path | None = None) -> str:
    """Resolve and verify the weights file that `build_extractor(name, weights)` would load, without
    downloading (a sweep's preflight: the file must be in place before jobs start) and, for anatomix
    and the bundled extractors, without building the network or importing torch. Returns what was verified; raises
    ExtractorWeightsError (KeyError for an unknown name, ValueError for a weights file given to a
    random control) with the fix."""
    if name == "anatomix":
        path, sha, ok = anatomix_file(weights, download=False)
    elif name in BUNDLED_ARCH:
        path, _, sha, ok = _bundled_file(name, weights, verify=True)
    else:                                    # random controls (cheap) and plug-ins: built (imports torch)
        from dgbench.registry import EXTRACTORS
        return EXTRACTORS.get(name)(weights=weights).metadata().get("weights_path") or "no weights file"
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
