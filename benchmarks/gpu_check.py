"""The prepared check for the first GPU: one command, one table (rows print as they are measured).

    python benchmarks/gpu_check.py              # one GPU, under 8 minutes: the reference recipe's sizes
    python benchmarks/gpu_check.py --tiny       # tiny sizes on any device (the test suite runs it on a CPU)

Rows:
- step: median ms of the loop's own `Trainer.train_step` (batch 4, the paper U-Net, bf16 on
  CUDA) eager and with train.compile (compile time apart), for ERM and MaskGen at 128^3 and
  192x192x128, with MaskGen's overhead over ERM. MaskGen uses `anatomix-random`, the published
  anatomix architecture (its weights do not change the time); compiled, its extractor is too.
- loader: samples/s of one CPU worker, per-sample MONAI augmentation (train.aug_on=cpu) and crop
  only (aug_on=device), on volumes 1.5x the patch; against the samples/s the compiled ERM step
  consumes, and so how many workers would keep it fed (sweeps/paper.yaml gives 8 CPUs per GPU).
- device augmentation: ms per batch of the standard augmentation on the device.
- end-to-end: steps/s of a real `dgbench run` (a subprocess: loader, device augmentation,
  compile, the loop; synth data, the same recipe), from the interval between its first two
  validations less the time of one validation (measured here), against the pure step; the run
  is stopped after its second validation.
- inference: one sliding-window pass (overlap 0.5) over a 256^3 volume with the 128^3 patch, ERM
  and MaskGen, eager.
- peak GPU memory of each measurement (n/a on a CPU), and the seconds since the start.
With --tiny every row runs through the same code at small sizes, and torch.compile uses the
aot_eager backend (graph capture without code generation) unless DGBENCH_COMPILE_BACKEND says otherwise.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader_speed import Volumes  # noqa: E402

# anatomix-random: the published anatomix architecture (the paper's MaskGen extractor) with
# untrained weights, which do not change the time; --tiny uses the small bundled one.
FULL = {"sizes": [(128, 128, 128), (192, 192, 128)], "batch": 4, "backbone": {"width": 20, "levels": 5},
        "steps": 5, "warmup": 2, "loader_samples": 6, "e2e_half": 40, "volume": 256, "extractor": "anatomix-random"}
TINY = {"sizes": [(32, 32, 32), (32, 32, 48)], "batch": 2, "backbone": {"width": 2, "levels": 1},
        "steps": 1, "warmup": 0, "loader_samples": 1, "e2e_half": 6, "volume": 40, "extractor": "synthanat-v2"}
CPUS_PER_GPU = 8                     # sweeps/paper.yaml


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f}" if device.type == "cuda" else "n/a"


def train_options(p: dict, patch, compile_: str, **more) -> dict:
    return {"patch_size": list(patch), "batch_size": p["batch"], "backbone_kwargs": dict(p["backbone"]),
            "compile": compile_, "aug_on": "device", **more}


def spec_for(method: str, train: dict, extractor: str):
    from dgbench.spec import resolve
    hp = {"extractor": extractor} if method == "maskgen" else None
    return resolve("synth", method, hparams=hp, train=train)


def step_time(method: str, patch, compile_: str, p: dict, device) -> dict:
    """Median ms of train_step on one augmented batch already on the device, and the first
    step's extra time (the compile)."""
    from dgbench.rundir import RunDir
    from dgbench.train import Trainer, train_batches
    reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(spec_for(method, train_options(p, patch, compile_), p["extractor"]), RunDir(tmp), device=device,
                    progress=False)
        x, y = next(train_batches(t, 1))
        times = []
        for i in range(1 + p["warmup"] + p["steps"]):
            torch.manual_seed(i)
            sync(device)
            t0 = time.perf_counter()
            t.train_step(x, y)
            sync(device)
            times.append(time.perf_counter() - t0)
        step = float(np.median(times[1 + p["warmup"]:]))
        out = {"ms": 1e3 * step, "first_s": times[0] - step, "peak": peak(device), "compiled": t.compiled}
        if method == "erm" and patch == p["sizes"][0] and compile_ == "off":
            out["net"], out["method"] = t.net, t.method      # reused for the inference row
    torch._dynamo.reset()
    return out


def loader_rates(patch, p: dict, device) -> dict:
    """Samples/s of one CPU thread: the per-sample MONAI path and crop only; device augmentation
    ms per batch."""
    from dgbench.data.device_aug import DeviceAugmentation, standard_device_augmentation
    from dgbench.data.sampling import PatchDataset, standard_augmentation
    shape = tuple(int(s * 1.5) for s in patch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            vols = Volumes(Path(tmp), shape)
            ids = list(vols.cases)
            sp, it = standard_augmentation(patch, 0.33, sided=False)
            before = PatchDataset(vols, ids, patch, 0, 0.33, sp + it, 10 ** 6)
            after = PatchDataset(vols, ids, patch, 0, 0.33, None, 10 ** 6)
            n = p["loader_samples"]
            t0 = time.perf_counter()
            for k in range(n):
                before[k]
            t_before = (time.perf_counter() - t0) / n
            t0 = time.perf_counter()
            items = [after[k] for k in range(4 * n)]
            t_after = (time.perf_counter() - t0) / (4 * n)
    finally:
        torch.set_num_threads(threads)
    dsp, dit = standard_device_augmentation(patch, 0.33, sided=False)
    aug = DeviceAugmentation(dsp + dit, seed=0)
    b = p["batch"]
    times = []
    for i in range(len(items) // b):
        part = items[i * b:(i + 1) * b]
        x = torch.stack([s["image"] for s in part]).to(device)
        y = torch.stack([s["label"] for s in part]).to(device)
        sync(device)
        t0 = time.perf_counter()
        aug(x, y, [s["index"] for s in part])
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"before": 1 / t_before, "after": 1 / t_after, "aug_ms": 1e3 * float(np.mean(times[1:] or times))}


def end_to_end(p: dict, results: Path, timeout: float = 600) -> float:
    """Steps/s of `dgbench run` between its first and second validation. The run is stopped
    there: its final evaluation is no part of the figure."""
    from dgbench.rundir import RunDir
    h = p["e2e_half"]
    spec = spec_for("erm", train_options(p, p["sizes"][0], "on", steps=3 * h, val_every=h, ckpt_every=3 * h),
                    p["extractor"])
    rd = RunDir.for_run(results, spec.run_id)
    rd.write_spec(spec)
    cmd = [sys.executable, "-c", "import sys; from dgbench.cli import main; sys.exit(main())", "run", str(rd.path)]
    pattern = re.compile(r"step \d+/\d+ loss .* \(([\d.]+) s since last validation\)")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=dict(os.environ))
        deadline, intervals = time.time() + timeout, []
        try:
            while time.time() < deadline and proc.poll() is None:
                if rd.log_file.exists():
                    intervals = [float(v) for v in pattern.findall(rd.log_file.read_text())]
                if len(intervals) >= 2:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if len(intervals) < 2:
            err.seek(0)
            raise RuntimeError(f"dgbench run (exit {proc.returncode}) logged {len(intervals)} of 2 validations in "
                               f"{rd.log_file}:\n{err.read()[-3000:]}")
    # the interval includes the second validation (the log's clock restarts after it): time
    # one here on the same net and data and take it out
    from dgbench.train import Trainer
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(spec, RunDir(tmp), progress=False)
        vals = []
        for _ in range(2):
            t0 = time.perf_counter()
            t.validate()
            vals.append(time.perf_counter() - t0)
    train_s = intervals[1] - vals[-1]
    return h / train_s if train_s > 0 else float("nan")


def inference_s(net, method, p: dict, device, amp) -> float:
    from dgbench.evaluate import predict
    net.eval()
    v = p["volume"]
    image = torch.rand(1, 1, v, v, v, device=device)
    roi = p["sizes"][0]
    times = []
    for _ in range(2):                            # the first pass also picks cudnn's algorithms
        sync(device)
        t0 = time.perf_counter()
        predict(net, method, image, roi, 0.5, 4, amp)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times[-1]


T0 = time.time()


def row(*cells, clock: bool = True) -> None:
    """One table row; the last column is the time since the start (where the minutes go)."""
    cells = cells + ((f"{time.time() - T0:.0f}",) if clock else ())
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, any device (what the test suite runs)")
    ap.add_argument("--results", default=None, help="folder for the end-to-end run (default: a temporary one)")
    ap.add_argument("--sizes", default=None, help="crop sizes, e.g. 128x128x128 (default: both of the mode); "
                    "the first is the end-to-end run's and the inference patch")
    a = ap.parse_args(argv)
    p = dict(TINY if a.tiny else FULL)
    if a.sizes:
        p["sizes"] = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    if a.tiny:
        os.environ.setdefault("DGBENCH_COMPILE_BACKEND", "aot_eager")
    from dgbench import accel
    from dgbench.amp import amp_dtype_for
    from dgbench.train import pick_device
    device = pick_device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    global T0
    T0 = t_start = time.time()
    print(f"device: {name}; torch {torch.__version__}; compile backend {accel.backend()}; "
          f"batch {p['batch']}; U-Net {p['backbone']}; MaskGen extractor {p['extractor']}")
    row("check", "setting", "value", "against", "ratio", "peak GPU GiB", "elapsed s", clock=False)
    row(*["---"] * 7, clock=False)
    step = {}
    for patch in p["sizes"]:
        size = "x".join(map(str, patch))
        for method in ("erm", "maskgen"):
            r = {c: step_time(method, patch, c, p, device) for c in ("off", "on")}
            step[(method, patch)] = r
            e, c = r["off"], r["on"]
            value = f"eager {e['ms']:.1f} ms, compiled {c['ms']:.1f} ms (compile {c['first_s']:.0f} s)"
            if method == "erm":
                row("step", f"erm {size} b{p['batch']}", value, "eager", f"compiled {e['ms'] / c['ms']:.2f}x faster",
                    f"{e['peak']} / {c['peak']}")
            else:
                base = step[("erm", patch)]
                over = [100 * (r[k]["ms"] / base[k]["ms"] - 1) for k in ("off", "on")]
                row("step", f"maskgen {size} b{p['batch']}", value, "erm",
                    f"overhead eager {over[0]:+.0f}%, compiled {over[1]:+.0f}%", f"{e['peak']} / {c['peak']}")
    for patch in p["sizes"]:
        size = "x".join(map(str, patch))
        reset_peak(device)
        lr = loader_rates(patch, p, device)
        need = p["batch"] / (step[("erm", patch)]["on"]["ms"] / 1e3)
        row("loader samples/s, 1 CPU worker", f"{size}", f"MONAI per sample {lr['before']:.1f}, crop only "
            f"{lr['after']:.0f}", f"compiled erm step eats {need:.1f}/s",
            f"workers needed: {math.ceil(need / lr['before'])} before, {math.ceil(need / lr['after'])} after "
            f"({CPUS_PER_GPU} CPUs per GPU)", "")
        row("device augmentation", f"{size} b{p['batch']}", f"{lr['aug_ms']:.1f} ms per batch",
            "compiled erm step", f"{100 * lr['aug_ms'] / step[('erm', patch)]['on']['ms']:.0f}% of it", peak(device))
    size0 = "x".join(map(str, p["sizes"][0]))
    erm = step[("erm", p["sizes"][0])]["off"]
    amp = amp_dtype_for("auto", device)
    reset_peak(device)
    s_erm = inference_s(erm["net"], erm["method"], p, device, amp)
    mem_erm = peak(device)
    from dgbench.method import MethodContext
    from dgbench.registry import DATASETS, METHODS
    from dgbench.models.backbones import build_backbone
    from dgbench.train import loop_loss
    adapter = DATASETS.get("synth")()
    ctx = MethodContext(loss_fn=loop_loss(), amp_dtype=amp, n_classes=adapter.n_classes, sided=adapter.sided,
                        patch_size=tuple(p["sizes"][0]), aug_prob=0.33, device=device)
    mg = METHODS.get("maskgen")({"extractor": p["extractor"]}, ctx)
    mg.extractor.to(device)
    net = build_backbone("unet", mg.input_channels(), adapter.n_classes, **p["backbone"]).to(device)
    reset_peak(device)
    s_mg = inference_s(net, mg, p, device, amp)
    v = p["volume"]
    row("sliding-window inference", f"{v}^3 volume, patch {size0}, overlap 0.5", f"erm {s_erm:.2f} s",
        f"maskgen {s_mg:.2f} s", f"{s_mg / s_erm:.2f}", f"{mem_erm} / {peak(device)}")
    with tempfile.TemporaryDirectory() as tmp:
        reset_peak(device)
        e2e = end_to_end(p, Path(a.results) if a.results else Path(tmp))
    pure = 1e3 / step[("erm", p["sizes"][0])]["on"]["ms"]
    row("end-to-end steps/s", f"dgbench run erm {size0} b{p['batch']}", f"{e2e:.2f}", f"pure step {pure:.2f}",
        f"{e2e / pure:.2f}", "(subprocess)")
    print(f"total {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
