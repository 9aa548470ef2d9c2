"""Mixed precision: the recipe's `train.amp` as an autocast dtype, and the autocast context.

One rule for the training loop, the evaluator and the methods' own forwards (SLAug's GLA pass,
AdvBias's search, MaskGen's frozen extractor): a method gets the resolved dtype as
`MethodContext.amp_dtype` and enters `autocast(x.device, ctx.amp_dtype)`.
"""
from __future__ import annotations

import torch


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """train.amp -> autocast dtype: "bf16" -> bfloat16; "auto" -> bfloat16 on CUDA, else None
    (fp32); "fp32" -> None."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`'s type; disabled (fp32) when dtype is None."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
