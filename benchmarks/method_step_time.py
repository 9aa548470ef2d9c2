"""Training-step time of every method relative to ERM (MaskGen's overhead included, issue 3).

    python benchmarks/method_step_time.py [--configs embedded,paper] [--methods erm,maskgen,...]
                                          [--steps 10] [--warmup 3] [--threads 1] [--data-only]

For each method it measures, on the current device:
- data: the per-sample CPU pipeline (crop + the method's augmentation + min-max) for one batch,
  mean over `steps` fresh batches (the mean, not the median: rare expensive transforms such as
  DA5's median filter count for throughput; the loop runs this in DataLoader workers when
  num_workers > 0);
- step: the loop's step body (method.train_batch, forward under autocast, the method's loss,
  backward, AdamW step) on a fixed batch, median over `steps` steps after `warmup` steps;
and prints both and their ratios to ERM as a Markdown table.

`embedded` is the synth dataset's recipe (patch 32^3, its batch size, U-Net width 8, 3 levels);
`paper` is the reference size (patch 128^3, batch 2, width 20, 5 levels; synth volumes are
zero-padded to the patch). On a CPU the paper size takes minutes per step: use --steps 2.
Random-kernel methods (RandConv, GIN) meet new convolution shapes for a while; the warm-up
steps and the median keep one-off kernel set-up out of the figure.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import default_collate

from dgbench.registry import DATASETS
from dgbench.rundir import RunDir
from dgbench.spec import TrainConfig, resolve
from dgbench.train import Trainer, pick_device

CONFIGS = {
    "embedded": {},
    "paper": {"patch_size": [128, 128, 128], "batch_size": 2, "backbone_kwargs": {"width": 20, "levels": 5}},
}
BASELINES = ["heavyaug", "bigaug", "randconv", "randconv-mix", "gin", "gin-ipa", "mixstyle", "dsu", "slaug",
             "synthseg", "synthseg-mix", "advbias"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def measure(train: dict, name: str, steps: int, warmup: int, device, data_only: bool = False) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(resolve("synth", name, train=train), RunDir(tmp), device=device, progress=False)
        bs = trainer.cfg.batch_size
        data_times, batch = [], None
        for i in range(steps + 1):                      # batch 0 warms the pipeline up (not timed)
            t = time.perf_counter()
            batch = default_collate([trainer.data[i * bs + j] for j in range(bs)])
            data_times.append(time.perf_counter() - t)
        data_times = data_times[1:]
        if data_only:
            return {"data_s": sum(data_times) / len(data_times), "step_s": float("nan")}
        times = []
        for i in range(warmup + steps):
            torch.manual_seed(1000 + i)
            sync(device)
            t = time.perf_counter()
            trainer.train_step(*trainer.batch_to_device(batch))   # the loop's own step body
            sync(device)
            times.append(time.perf_counter() - t)
    return {"data_s": sum(data_times) / len(data_times), "step_s": median(times[warmup:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="embedded")
    p.add_argument("--methods", default=",".join(["erm", "maskgen"] + BASELINES))
    p.add_argument("--steps", type=int, default=10, help="timed steps (and data batches) per method; median reported")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--data-only", action="store_true", help="time the CPU pipelines only (no network)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device()
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    methods = a.methods.split(",")
    methods = ["erm"] + [m for m in methods if m != "erm"]      # the reference comes first
    synth = DATASETS.get("synth")()
    for c in a.configs.split(","):
        cfg = TrainConfig.from_dict({**synth.train_defaults, **CONFIGS[c]})
        print(f"\n{c}: patch {'x'.join(map(str, cfg.patch_size))}, batch {cfg.batch_size}, "
              f"{cfg.backbone} {cfg.backbone_kwargs}; {dev}; torch {torch.__version__}; "
              f"step: median of {a.steps} after {a.warmup} warm-up steps; data: mean of {a.steps} batches\n")
        print(f"| {'method':14s} | {'data s/batch':>12s} | {'step s':>8s} | {'step / ERM':>10s} | "
              f"{'data+step / ERM':>15s} |")
        print(f"|{'-' * 16}|{'-' * 14}:|{'-' * 9}:|{'-' * 11}:|{'-' * 16}:|")
        ref = None
        for i, name in enumerate(methods + ["erm"]):   # ERM again at the end: the run-to-run noise
            r = measure(CONFIGS[c], name, a.steps, a.warmup, device, a.data_only)
            ref = ref or r
            name = "erm (again)" if i == len(methods) else name
            total = (r["data_s"] + r["step_s"]) / (ref["data_s"] + ref["step_s"])
            print(f"| {name:14s} | {r['data_s']:12.3f} | {r['step_s']:8.3f} | {r['step_s'] / ref['step_s']:10.2f} | "
                  f"{total:15.2f} |", flush=True)


if __name__ == "__main__":
    main()
