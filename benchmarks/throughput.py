"""Training steps/s and data-pipeline samples/s on the current device.

    python benchmarks/throughput.py [--configs embedded,paper] [--method erm] [--steps 5] [--threads N]

`embedded` is the synth dataset's default recipe; `paper` is the reference recipe's size
(128³ patches, batch 2, the paper U-Net: width 20, 5 levels). Data throughput is measured on
the synth cache (patches are zero-padded where a volume is smaller than the patch).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dgbench.rundir import RunDir
from dgbench.spec import resolve
from dgbench.train import Trainer, pick_device

CONFIGS = {
    "embedded": {},
    "paper": {"patch_size": [128, 128, 128], "batch_size": 2, "backbone_kwargs": {"width": 20, "levels": 5}},
}


def measure(method_name: str, train: dict, steps: int, device) -> dict:
    """Median step time of the real training step (Trainer.train_step) and per-sample data time."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(resolve("synth", method_name, train=train), RunDir(tmp), device=device, progress=False)
        cfg = trainer.cfg
        n = max(8, 2 * cfg.batch_size)
        t = time.perf_counter()
        samples = [trainer.data[k] for k in range(n)]
        data_rate = n / (time.perf_counter() - t)
        batch = torch.utils.data.default_collate(samples[: cfg.batch_size])
        times = []
        for i in range(steps + 2):                       # 2 warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.train_step(*trainer.batch_to_device(batch))   # device augmentation included, as in the loop
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    step = sorted(times[2:])[len(times[2:]) // 2]
    return {"step_s": step, "steps_per_s": 1 / step, "samples_per_s": data_rate,
            "train_samples_per_s": cfg.batch_size / step, "cfg": cfg}


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
    for c in a.configs.split(","):
        r = measure(a.method, CONFIGS[c], a.steps, device)
        cfg = r["cfg"]
        print(f"{c:10s} {'x'.join(map(str, cfg.patch_size)):>12s} {cfg.batch_size:5d} {r['step_s']:8.3f} "
              f"{r['steps_per_s']:8.2f} {r['train_samples_per_s']:12.1f} {r['samples_per_s']:12.1f}", flush=True)


if __name__ == "__main__":
    main()
