"""The training state of a run in its checkpoints: what is saved, how it is read back, and the
exact resume (``Checkpoints``, a part of dgbench.train.Trainer).

A checkpoint is ``torch.save`` of ``Trainer.state()``: model, optimiser and scheduler state, the
step, the best source-val and target-val scores and their steps, the losses since the last
validation, the run id and the versions. checkpoints/last.pt is written through
``RunDir.write_checkpoint`` (the file it replaces stays as prev.pt); best.pt and
oracle_target_val.pt are written atomically (dgbench.atomic).
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import torch

from dgbench import __version__, convergence
from dgbench.atomic import atomic_write_bytes

log = logging.getLogger("dgbench")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


class Checkpoints:
    """Save, read, resume and load a Trainer's state (the Trainer supplies spec, rd, device, net,
    opt, sched and the counters that ``state`` names)."""

    def state(self) -> dict:
        return {"model": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "step": self.step, "best_val": self.best_val, "best_step": self.best_step,
                "best_target_val": self.best_tv, "best_target_val_step": self.best_tv_step,
                "losses": list(self.losses), "run_id": self.spec.run_id, "dgbench": __version__, "torch": torch.__version__}

    def save(self, *paths: Path) -> None:
        """The current state, serialised once, written to each of ``paths``."""
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        for path in paths:
            if path == self.rd.last_ckpt:
                self.rd.write_checkpoint(buf.getvalue())      # keeps the one it replaces as prev.pt
            else:
                atomic_write_bytes(path, buf.getvalue())

    def read_checkpoint(self, path: Path) -> dict:
        """torch.load, with an error that names the file and the way out when it is unreadable."""
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
            if not isinstance(ck, dict) or "model" not in ck:
                raise ValueError("not a dgbench checkpoint")
            return ck
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from e

    def resume(self) -> bool:
        """Load checkpoints/last.pt, or, when it is unreadable, the checkpoint it replaced (prev.pt)
        with a line in the log. False when there is nothing to resume from."""
        rd, bad = self.rd, []
        for path in (rd.last_ckpt, rd.prev_ckpt):
            if not path.exists():
                continue
            try:
                ck = self.read_checkpoint(path)
            except CheckpointError as e:
                bad.append((path, e))
                continue
            self.load(path, ck)
            if bad:
                rd.log(f"{bad[0][1]}; resumed from the previous checkpoint {path.name} (step {self.step}) "
                       f"and removed the unreadable one")
                log.warning("run %s: %s; resuming from %s (step %d)", self.spec.run_id, bad[0][1], path, self.step)
                for p, _ in bad:
                    p.unlink(missing_ok=True)
            return True
        if bad:
            files = " ".join(str(p) for p, _ in bad)
            raise CheckpointError(f"{bad[0][1]}" + (f"; so is {bad[1][0].name}" if len(bad) > 1 else "")
                                  + f". No readable checkpoint is left: delete it (rm {files}) to restart the "
                                  f"run from step 0, then run it again.")
        return False

    def load(self, path: Path, ck: dict | None = None) -> None:
        ck = self.read_checkpoint(path) if ck is None else ck
        if ck.get("run_id") != self.spec.run_id:
            raise RuntimeError(f"{path}: checkpoint belongs to run {ck.get('run_id')}, not {self.spec.run_id}.")
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        self.step, self.best_val, self.best_step = ck["step"], ck["best_val"], ck["best_step"]
        self.best_tv, self.best_tv_step = ck.get("best_target_val", -math.inf), ck.get("best_target_val_step", -1)
        self.losses = list(ck.get("losses", []))
        # rows past the checkpoint came from a process killed after writing them
        self.loss_log = [r for r in convergence.read_train_loss(self.rd.train_loss) if r[0] <= self.step]
