"""The one training loop, for every method; checkpoint and exact resume; final evaluation.

`execute(spec, results)` is what every executor calls (inline, local pool, Slurm).
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from dgbench import accel, convergence
from dgbench.amp import amp_dtype_for, autocast
from dgbench.checkpoint import Checkpoints
from dgbench.data.cache import ensure_prepared
from dgbench.data.device_aug import DeviceAugmentation, DeviceOp, standard_device_augmentation
from dgbench.data.sampling import PatchDataset, standard_augmentation
from dgbench.evaluate import evaluate_cases, mean_dice
from dgbench.method import MethodContext
from dgbench.progress import progress as progress_bar
from dgbench.models.backbones import build_backbone
from dgbench.registry import DATASETS, METHODS
from dgbench.atomic import atomic_write_text, is_out_of_space
from dgbench.rundir import RunDir, RunFolderError
from dgbench.selection import ORACLE, append_val_history, final_metrics, write_metrics
from dgbench.spec import RunSpec

log = logging.getLogger("dgbench")


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def loop_loss() -> DiceCELoss:
    """The loop's supervised loss for every method (Dice + cross-entropy, Diaz et al. 2026)."""
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 12345) % (2 ** 63 - 1)


class Trainer(Checkpoints):
    """Everything a run needs, built from the spec; `fit()` trains, `dgbench.selection.final_metrics`
    evaluates."""

    def __init__(self, spec: RunSpec, rd: RunDir, device: torch.device | None = None, progress: bool = True):
        self.spec, self.rd, self.progress = spec, rd, progress
        self.cfg = spec.train
        self.cfg.check()
        self.device = device or pick_device()
        self.amp = amp_dtype_for(self.cfg.amp, self.device)
        self.adapter = DATASETS.get(spec.dataset)()
        split = self.adapter.split()
        if split.sha1 != spec.split_sha:
            raise RuntimeError(f"{split.path} changed since this run was specified (checksum {split.sha1}, "
                               f"run has {spec.split_sha}); results would mix splits. Restore the split "
                               f"file or start a new run.")
        self.split = split
        self.train_ids = split.train_cases(spec.fewshot)
        self.val_cases = [("val", c) for c in split.val]
        # the oracle's cases (dgbench.selection): scored at every validation, never used for training
        self.target_val_cases = [("target-val", c) for ids in split.target_val.values() for c in ids]
        self.prepared = ensure_prepared(self.adapter)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(spec.seed)
        self.loss_fn = loop_loss()
        ctx = MethodContext(loss_fn=self.loss_fn, amp_dtype=self.amp, n_classes=self.adapter.n_classes,
                            sided=self.adapter.sided, patch_size=tuple(self.cfg.patch_size),
                            aug_prob=self.cfg.aug_prob, device=self.device)
        self.method = METHODS.get(spec.method)(spec.hparams, ctx)
        net = build_backbone(self.cfg.backbone, self.method.input_channels(), self.adapter.n_classes,
                             **self.cfg.backbone_kwargs)
        # channels-last 3-D: measured 1.4-2x faster conv steps on CPU (benchmarks/throughput.py)
        self.net = self.method.wrap_network(net).to(self.device, memory_format=torch.channels_last_3d)
        for m in self.method.frozen_modules():
            m.to(self.device)
        # train.compile: training steps run `train_net`, a compiled view sharing self.net's
        # parameters; self.net (state_dict, checkpoints, evaluation) stays the eager module
        self.compiled = accel.use_compile(self.cfg.compile, self.device)
        self.train_net = accel.compiled(self.net) if self.compiled else self.net
        if self.compiled:
            for m in self.method.frozen_modules():          # a FrozenExtractor's network, in place
                accel.compile_in_place(getattr(m, "net", m), plain_inputs=True)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                     betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.cfg.steps, eta_min=0.0)
        self.step, self.best_val, self.best_step = 0, -math.inf, -1
        self.best_tv, self.best_tv_step = -math.inf, -1     # best target-val score: the oracle
        self.losses: list[float] = []    # training losses since the last validation
        self.loss_log: list[tuple[int, float]] = []   # (step, loss) of every step: train_loss.csv
        self.convergence: dict | None = None          # set by fit(): dgbench.convergence verdict
        self.heartbeat: Heartbeat | None = None
        self.aug_on, self.device_aug, transforms = pick_augmentation(self.method, self.cfg, self.adapter.sided,
                                                                     spec.seed, self.device)
        self.data = PatchDataset(self.prepared, self.train_ids, self.cfg.patch_size, spec.seed,
                                 self.cfg.fg_oversample, transforms, self.cfg.steps * self.cfg.batch_size)

    # training -----------------------------------------------------------------------------
    def evaluate(self, cases: list[tuple[str, str]], keep_predictions: set[str] | None = None,
                 progress: bool = False, desc: str = "evaluate"):
        """`dgbench.evaluate.evaluate_cases` with this run's network and settings: the one
        evaluation path of validations and the final evaluation."""
        return evaluate_cases(self.net, self.method, self.prepared, cases, self.cfg, self.device, self.amp,
                              keep_predictions=keep_predictions, progress=progress, desc=desc)

    def validate(self) -> float:
        """Mean Dice (clean mean) over the source-val cases: the primary selection."""
        return mean_dice(self.evaluate(self.val_cases)[0])

    def validate_target(self) -> float | None:
        """The same score over the target-val cases (the oracle); None when the split has none."""
        return mean_dice(self.evaluate(self.target_val_cases)[0]) if self.target_val_cases else None

    def fit(self) -> None:
        cfg, rd = self.cfg, self.rd
        if self.resume():
            rd.log(f"resumed from step {self.step}")
        if self.target_val_cases:
            rd.log(f"target-val: {len(self.target_val_cases)} target cases scored at every validation for the "
                   f"oracle checkpoint ({ORACLE}, {rd.oracle_ckpt.name}); never used for the primary selection")
        else:
            rd.log(f"no target-val cases in the split: no oracle checkpoint and no '{ORACLE}' rows")
        self.net.train()
        sampler = range(self.step * cfg.batch_size, cfg.steps * cfg.batch_size)
        loader = torch.utils.data.DataLoader(self.data, batch_size=cfg.batch_size, sampler=sampler,
                                             num_workers=cfg.num_workers, drop_last=True,
                                             persistent_workers=cfg.num_workers > 0,
                                             pin_memory=self.device.type == "cuda")
        bar = progress_bar(cfg.steps, self.spec.run_id, "step", initial=self.step, disable=not self.progress)
        t0 = time.time()
        pending: list[torch.Tensor] = []   # this interval's losses, still on the device
        for batch in loader:
            x, y = self.batch_to_device(batch)
            torch.manual_seed(step_seed(self.spec.seed, self.step))
            pending.append(self.train_step(x, y))
            self.sched.step()
            self.step += 1
            bar.update()
            if self.step % cfg.val_every == 0 or self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self._read_losses(pending)
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                bar.set_postfix(**self._validation_point(t0))
                t0 = time.time()
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self._write_train_loss()          # before last.pt: a resume may drop rows, never miss them
                self.save(rd.last_ckpt)
                rd.beat(self.step)
                if self.heartbeat is not None:
                    self.heartbeat.step = self.step
        bar.close()
        self.convergence = convergence.of_run(rd.path, cfg.steps)
        rd.log(f"convergence: {convergence.describe(self.convergence)}")

    def _validation_point(self, since: float) -> dict:
        """Score source-val, and target-val where the split has it; record both in val_history.csv
        and keep each rule's best weights (best.pt; oracle_target_val.pt). The scores never feed
        back into training: the weights, optimiser and the torch seed of the next step (step_seed)
        are untouched."""
        t0 = time.time()
        val = self.validate()
        t1 = time.time()
        tv = self.validate_target()
        t2, loss = time.time(), float(np.mean(self.losses))
        append_val_history(self.rd.val_history, self.step, loss, val, tv)
        improved = []
        if val > self.best_val:
            self.best_val, self.best_step = val, self.step
            improved.append(self.rd.best_ckpt)
        if tv is not None and tv > self.best_tv:
            self.best_tv, self.best_tv_step = tv, self.step
            improved.append(self.rd.oracle_ckpt)
        if improved:                             # after both updates: the files hold the same state
            self.save(*improved)
        oracle = ("", "") if tv is None else (f" target_val_dice {tv:.4f}", f", target-val (oracle) {t2 - t1:.1f} s")
        self.rd.log(f"step {self.step}/{self.cfg.steps} loss {loss:.4f} val_dice {val:.4f}{oracle[0]} (source-val "
                    f"{t1 - t0:.1f} s{oracle[1]}) ({time.time() - since:.1f} s since last validation)")
        self.losses.clear()
        return {"loss": f"{loss:.3f}", "val": f"{val:.3f}"}

    def batch_to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A collated batch on the device (non-blocking; the loader pins it on CUDA), augmented
        there when the augmentation runs on the device (train.aug_on); labels as int64."""
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        if self.device_aug is not None:
            x, y = self.device_aug(x, y, batch["index"].tolist())
        return x, y.long()

    def _read_losses(self, pending: list) -> None:
        """Move the losses of the steps since the last read to the host: one sync per log,
        validation or checkpoint point instead of one per step. Every step keeps its exact value
        (train_loss.csv); a non-finite one stops the run, naming its step."""
        if not pending:
            return
        values = torch.stack(pending).tolist()
        first = self.step - len(values) + 1
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise FloatingPointError(f"loss is {v} at step {first + i}; lower the learning rate "
                                         f"(train.lr) or check the input data.")
        self.losses.extend(values)
        self.loss_log.extend(zip(range(first, self.step + 1), values))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch (the method's hooks included); returns the loss, detached
        and on the device (reading it here would wait for the device at every step)."""
        x = x.to(self.device, non_blocking=True, memory_format=torch.channels_last_3d)
        y = y.to(self.device, non_blocking=True)
        net = self.train_net
        x, y = self.method.train_batch(net, x, y)
        with autocast(self.device, self.amp):
            logits = net(x)
            loss = self.method.loss(net, x, y, logits)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _write_train_loss(self) -> None:
        lines = ["step,loss"] + [f"{step},{loss:.6g}" for step, loss in self.loss_log]
        atomic_write_text(self.rd.train_loss, "\n".join(lines) + "\n")


def trained(folder: Path, checkpoint: str = "best", device: torch.device | None = None) -> Trainer:
    """A run's Trainer with checkpoints/<checkpoint>.pt loaded, for diagnostics that read a run
    (benchmarks/maskgen_inputs.py, view_agreement.py); the folder is not written. A missing
    checkpoint raises RunFolderError naming it."""
    rd = RunDir(Path(folder))
    ckpt = rd.path / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt.exists():
        raise RunFolderError(f"{ckpt}: no such checkpoint (run the run to the end first)")
    t = Trainer(RunSpec.from_dict(rd.read_spec()), rd, device=device or torch.device("cpu"), progress=False)
    t.load(ckpt)
    return t


def train_batches(t: Trainer, n: int):
    """The first n training batches of t's patch dataset (its sampling and augmentation, indices
    0, 1, 2, ... in order), on t's device: what diagnostics and step timings feed a run."""
    bs = t.cfg.batch_size
    for i in range(n):
        yield t.batch_to_device(torch.utils.data.default_collate([t.data[i * bs + k] for k in range(bs)]))


def pick_augmentation(method, cfg, sided: bool, seed: int, device: torch.device):
    """(where, device augmentation or None, CPU transforms or None) for train.aug_on.

    On the device, the method's `augmentation` hook gets the standard pipeline as device ops; a
    hook that only picks among them (ERM, SynthSeg) keeps its meaning there. One that adds
    MONAI transforms of its own (HeavyAug, BigAug) has no device port: "auto" keeps such a
    method on the per-sample CPU path, an explicit "device" is refused."""
    where = accel.augment_on(cfg.aug_on, device)
    if where == "device":
        ops = method.augmentation(*standard_device_augmentation(cfg.patch_size, cfg.aug_prob, sided))
        foreign = sorted({type(t).__name__ for t in ops if not isinstance(t, DeviceOp)})
        if not foreign:
            return "device", DeviceAugmentation(ops, seed), None
        if cfg.aug_on == "device":
            raise ValueError(f"train.aug_on=device: the augmentation of method {type(method).__name__} has "
                             f"transforms with no device port ({', '.join(foreign)}); train it with "
                             f"--train aug_on=cpu (or auto, which keeps it on the CPU path).")
    spatial, intensity = standard_augmentation(cfg.patch_size, cfg.aug_prob, sided)
    return "cpu", None, method.augmentation(spatial, intensity)


class Heartbeat:
    """Refreshes heartbeat.json every `every` seconds from a thread while the run holds its lock,
    so data preparation, validation and evaluation never look stale to `status` or the lock."""

    def __init__(self, rd: RunDir, every: float = 60.0):
        self.rd, self.every, self.step = rd, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                self.rd.beat(self.step)
            except OSError:          # a full disk: the loop reports it; the next beat tries again
                pass

    def __enter__(self):
        hb = self.rd.heartbeat()
        self.step = hb["step"] if hb else 0
        self.rd.beat(self.step)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def execute(spec: RunSpec, results: Path, progress: bool = True, device: torch.device | None = None) -> str:
    """Run one spec to the end in its run folder. Returns "done", "failed", "busy" (a live
    process holds the run), "invalid" (its folder's spec.json names another run; nothing is
    touched) or "interrupted" (out of disk space: resumable once there is room)."""
    rd = RunDir.for_run(results, spec.run_id)
    try:
        rd.read_spec()
    except RunFolderError as e:
        log.error("run %s: %s", spec.run_id, e)
        return "invalid"
    if rd.done_file.exists():
        return "done"
    try:
        if not rd.acquire_lock():
            return "busy"
        try:
            rd.remove_temp_files()           # of a process killed mid-write
            with Heartbeat(rd) as hb:
                return _execute_locked(spec, rd, hb, progress, device)
        finally:
            rd.release_lock()
    except OSError as e:
        if not is_out_of_space(e):
            raise
        where = Path(e.filename).parent if e.filename else rd.path
        msg = (f"run {spec.run_id}: out of disk space writing {e.filename or rd.path}; free space in {where} "
               f"and run it again: it resumes from its last checkpoint")
        log.error(msg)
        try:
            rd.log(msg)
        except OSError:
            pass
        return "interrupted"


def _execute_locked(spec: RunSpec, rd: RunDir, hb: Heartbeat, progress: bool, device) -> str:
    try:
        rd.write_spec(spec)
        if rd.failed_file.exists():
            rd.failed_file.unlink()
        t0 = time.time()
        trainer = Trainer(spec, rd, device=device, progress=progress)
        trainer.heartbeat = hb
        rd.log(f"start {spec.run_id} on {trainer.device} (amp={trainer.amp}, compile={trainer.compiled}, "
               f"augmentation on {trainer.aug_on}), pid {os.getpid()}")
        spec_extra = trainer.method.describe()
        if spec_extra:
            rd.log(f"method info: {spec_extra}")
        trainer.fit()
        write_metrics(rd, final_metrics(trainer))
        best = trainer.best_val if math.isfinite(trainer.best_val) else None   # no validation scored
        oracle = ({"best_target_val_step": trainer.best_tv_step,
                   "best_target_val_dice": trainer.best_tv if math.isfinite(trainer.best_tv) else None}
                  if trainer.target_val_cases else {})
        rd.mark_done({"wall_s": round(time.time() - t0, 2), "steps": trainer.step, "best_step": trainer.best_step,
                      "best_val_dice": best, "device": str(trainer.device), "compile": trainer.compiled,
                      "aug_on": trainer.aug_on, **oracle, **spec_extra,
                      "convergence": trainer.convergence})
        rd.log("done")
        return "done"
    except (KeyboardInterrupt, SystemExit) as e:   # Ctrl-C, or submitit exiting after a requeue
        rd.log(f"interrupted ({type(e).__name__}); the next run of the same spec resumes from the last checkpoint")
        raise
    except Exception as e:  # recorded, never swallowed silently: failed.json keeps the traceback
        if is_out_of_space(e):
            raise                                  # not the run's fault: execute reports it, resumable
        rd.mark_failed(e)
        rd.log(f"failed: {type(e).__name__}: {e}")
        log.error("run %s failed: %s: %s (traceback in %s)", spec.run_id, type(e).__name__, e, rd.failed_file)
        return "failed"
