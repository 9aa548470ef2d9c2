"""Switches of the fast training path: torch.compile (train.compile) and where the standard
augmentation runs (train.aug_on). Each resolves "auto" for the device at hand, or says
clearly why an explicit choice cannot work there.
"""
from __future__ import annotations

import os
import shutil

import torch
from torch import nn

# The torch.compile backend. DGBENCH_COMPILE_BACKEND=aot_eager (graph capture without code
# generation) helps to tell a compiler problem from a model problem, and lets
# benchmarks/gpu_check.py --tiny run every path on a CPU in seconds.
DEFAULT_BACKEND = "inductor"


def backend() -> str:
    return os.environ.get("DGBENCH_COMPILE_BACKEND", DEFAULT_BACKEND)


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile (with the configured backend) cannot run on `device`; None if it can."""
    if backend() != "inductor":
        return None
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:          # pragma: no cover - very old torch
            return "this torch has no Triton support"
        return None if has_triton() else "Triton is not installed (pip install triton)"
    if device.type == "cpu":
        return None if cxx_compiler() else "no C++ compiler found (g++, c++ or clang++; or set CXX)"
    return f"inductor does not support {device.type} here"


def use_compile(mode: str, device: torch.device) -> bool:
    """train.compile: "auto" = on for CUDA (when it can run there), "on", "off"."""
    if mode == "off":
        return False
    problem = compile_problem(device)
    if mode == "on":
        if problem:
            raise ValueError(f"train.compile=on cannot run on {device.type}: {problem}. Fix that, or "
                             f"train with --train compile=off (or auto).")
        return True
    if mode == "auto":
        return device.type == "cuda" and problem is None
    raise ValueError(f"train.compile must be auto, on or off, got {mode!r}")


def compiled(module: nn.Module) -> nn.Module:
    """torch.compile(module): a view that shares the module's parameters. The loop trains through
    it and keeps the module itself for state_dict (no `_orig_mod.` prefix in checkpoints) and for
    evaluation, which stays eager: sliding windows come in several batch sizes, each a new graph."""
    return torch.compile(module, backend=backend())


def compile_in_place(module: nn.Module, plain_inputs: bool = False) -> nn.Module:
    """torch.compile a module's forward in place (nn.Module.compile), for modules a method calls
    itself (MaskGen's frozen extractor, in training and evaluation alike); its parameters and
    state_dict keys stay as they were.

    plain_inputs: give the module its tensor inputs with row-major strides. A one-channel batch
    in channels-last layout (the loop's input) has strides that fit both layouts; the graph then
    traced for a frozen extractor can disagree with what its convolutions return at run time
    ("view size is not compatible"; seen with aot_eager on a CPU)."""
    if plain_inputs:
        module.register_forward_pre_hook(_row_major)
    module.compile(backend=backend())
    return module


def _row_major(module, args):
    return tuple(a.clone(memory_format=torch.contiguous_format)
                 if isinstance(a, torch.Tensor) and a.stride() != _strides(a.shape) else a for a in args)


def _strides(shape) -> tuple:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def augment_on(mode: str, device: torch.device) -> str:
    """train.aug_on resolved to "cpu" (per sample, in the loader) or "device" (batched, where
    the network runs). "auto" = "device" on CUDA; on a CPU the per-sample path, measured
    no slower there (benchmarks/loader_speed.py), keeps every existing run's samples."""
    if mode == "auto":
        return "device" if device.type == "cuda" else "cpu"
    if mode in ("cpu", "device"):
        return mode
    raise ValueError(f"train.aug_on must be auto, cpu or device, got {mode!r}")
