"""Training steps/s and data-pipeline samples/s on the current device.

    python benchmarks/throughput.py [--configs embedded,paper] [--method erm] [--steps 5] [--threads N]

`embedded` is the synth dataset's default recipe; `paper` is the reference recipe's size
(128³ patches, batch 2, the paper U-Net: width 20, 5 levels). Data throughput is measured on
the synth cache (patches are zero-padded where a volume is smaller than the patch).
"""
from __future__ import annotations

import argparse
import time

import torch

from dgbench.data.cache import ensure_prepared
from dgbench.data.sampling import PatchDataset, standard_augmentation
from dgbench.evaluate import autocast
from dgbench.method import MethodContext
from dgbench.models.backbones import build_backbone
from dgbench.registry import DATASETS, METHODS
from dgbench.spec import TrainConfig
from dgbench.train import amp_dtype_for, pick_device

CONFIGS = {
    "embedded": {},
    "paper": {"patch_size": [128, 128, 128], "batch_size": 2, "backbone_kwargs": {"width": 20, "levels": 5}},
}


def measure(cfg: TrainConfig, method_name: str, steps: int, device) -> dict:
    adapter = DATASETS.get("synth")()
    prepared = ensure_prepared(adapter)
    method = METHODS.get(method_name)({}, MethodContext(adapter, cfg, device))
    spatial, intensity = standard_augmentation(cfg.patch_size, cfg.aug_prob, adapter.sided)
    data = PatchDataset(prepared, adapter.split().train, cfg.patch_size, 0, cfg.fg_oversample,
                        method.augmentation(spatial, intensity), 10 ** 6)
    n = max(8, 2 * cfg.batch_size)
    t = time.perf_counter()
    samples = [data[k] for k in range(n)]
    data_rate = n / (time.perf_counter() - t)
    x = torch.stack([s["image"] for s in samples[: cfg.batch_size]]).to(device)
    y = torch.stack([s["label"] for s in samples[: cfg.batch_size]]).to(device)
    net = method.wrap_network(build_backbone(cfg.backbone, method.input_channels(), adapter.n_classes,
                                             **cfg.backbone_kwargs))
    net = net.to(device, memory_format=torch.channels_last_3d)
    for m in method.frozen_modules():
        m.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    from monai.losses import DiceCELoss
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    amp = amp_dtype_for(cfg.amp, device)
    times = []
    for i in range(steps + 2):                       # 2 warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        xb, yb = method.train_batch(net, x.contiguous(memory_format=torch.channels_last_3d), y)
        with autocast(device, amp):
            logits = net(xb)
            loss = loss_fn(logits.float(), yb)
            extra = method.extra_loss(net, xb, yb, logits)
            if extra is not None:
                loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step = sorted(times[2:])[len(times[2:]) // 2]
    return {"step_s": step, "steps_per_s": 1 / step, "samples_per_s": data_rate,
            "train_samples_per_s": cfg.batch_size / step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="embedded,paper")
    p.add_argument("--method", default="erm")
    p.add_argument("--steps", type=int, default=5, help="timed steps per config (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; method {a.method}")
    print(f"{'config':10s} {'patch':>12s} {'batch':>5s} {'step s':>8s} {'steps/s':>8s} "
          f"{'train samp/s':>12s} {'data samp/s':>12s}")
    synth = DATASETS.get("synth")()
    for c in a.configs.split(","):
        cfg = TrainConfig.from_dict({**synth.train_defaults, **CONFIGS[c]})
        r = measure(cfg, a.method, a.steps, device)
        print(f"{c:10s} {'x'.join(map(str, cfg.patch_size)):>12s} {cfg.batch_size:5d} {r['step_s']:8.3f} "
              f"{r['steps_per_s']:8.2f} {r['train_samples_per_s']:12.1f} {r['samples_per_s']:12.1f}", flush=True)


if __name__ == "__main__":
    main()
