"""The run folder: the only place a run's state and results live.

Layout of ``<results>/runs/<run_id>/``::

    spec.json          the resolved RunSpec (RunSpec.to_dict) plus dgbench/torch versions
    log.txt            human-readable training log (appended across resumes)
    heartbeat.json     {"time": <unix seconds>, "step": int, "host": str, "pid": int}; refreshed while training
    lock               exists while a process trains this run: {"host", "pid", "time"}
    executor.json      who runs it: {"executor", "job_id", "host", "pid", "time"} (written by orchestrate)
    predictions/<case>.npz   image, label and pred of one target case per domain (for figures)
    checkpoints/last.pt, checkpoints/best.pt   full training state (model, optimiser, scheduler, step)
    val_history.csv    step, loss, val_dice (source-val mean Dice) - one row per validation;
                       loss is the mean training loss since the previous validation
    train_loss.csv     step, loss - the training loss of every step, rewritten at each checkpoint
                       (rows up to the checkpointed step; a resume drops rows past it)
    metrics.csv        per-case, per-class Dice, long format (columns: METRIC_COLUMNS)
    done.json          final marker: {"finished", "wall_s", "steps", "best_step", ..., "convergence"}
                       ("convergence": the dgbench.convergence verdict from the two CSV files above)
    failed.json        final marker on error: {"error": last line, "traceback": full text, "time"}

metrics.csv rows: one per (selection, split, case, class). ``selection`` is the checkpoint
rule ("last" = final weights, "source-val" = best source-val mean Dice); ``split`` is "val"
(the held-out source cases), "test" (the target-domain test cases) or "target-val" (target
cases the reference used for validation; only for a table labelled as an oracle); ``dice`` is NaN when the class
is absent from the ground truth (``gt_present`` False; ``pred_present`` says whether the model
predicted it anyway).

All writes are atomic (temporary file + rename), so a killed process never leaves a half-written
file that a reader would take for a finished one.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ["run_id", "dataset", "method", "setting", "seed", "selection", "split",
                  "domain", "case", "class", "class_name", "dice", "gt_present", "pred_present"]

STATES = ("pending", "running", "stale", "failed", "done")
HEARTBEAT_STALE_S = 600.0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, results: Path, run_id: str) -> "RunDir":
        return cls(Path(results) / "runs" / run_id)

    # file names -------------------------------------------------------------------------
    spec_file = property(lambda self: self.path / "spec.json")
    log_file = property(lambda self: self.path / "log.txt")
    heartbeat_file = property(lambda self: self.path / "heartbeat.json")
    lock_file = property(lambda self: self.path / "lock")
    ckpt_dir = property(lambda self: self.path / "checkpoints")
    last_ckpt = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_ckpt = property(lambda self: self.path / "checkpoints" / "best.pt")
    val_history = property(lambda self: self.path / "val_history.csv")
    train_loss = property(lambda self: self.path / "train_loss.csv")
    metrics_file = property(lambda self: self.path / "metrics.csv")
    done_file = property(lambda self: self.path / "done.json")
    failed_file = property(lambda self: self.path / "failed.json")

    # state ------------------------------------------------------------------------------
    def state(self, now: float | None = None, stale_after: float = HEARTBEAT_STALE_S) -> str:
        """pending / running / stale / failed / done, from the files alone."""
        if self.done_file.exists():
            return "done"
        if self.failed_file.exists():
            return "failed"
        hb = self.heartbeat()
        if hb is None:
            return "pending"
        now = time.time() if now is None else now
        return "running" if now - float(hb.get("time", 0)) <= stale_after else "stale"

    def heartbeat(self) -> dict | None:
        try:
            return read_json(self.heartbeat_file)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def beat(self, step: int) -> None:
        atomic_write_json(self.heartbeat_file, {"time": time.time(), "step": int(step),
                                                "host": socket.gethostname(), "pid": os.getpid()})

    def log(self, msg: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n"
        with open(self.log_file, "a") as f:
            f.write(line)

    def mark_done(self, info: dict) -> None:
        if self.failed_file.exists():
            self.failed_file.unlink()
        atomic_write_json(self.done_file, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})

    def mark_failed(self, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        last = f"{type(exc).__name__}: {exc}".strip().splitlines()
        atomic_write_json(self.failed_file, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                             "error": last[0] if last else type(exc).__name__,
                                             "traceback": tb})

    def last_error(self) -> str | None:
        try:
            return read_json(self.failed_file)["error"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    # lock -------------------------------------------------------------------------------
    def acquire_lock(self, stale_after: float = HEARTBEAT_STALE_S) -> bool:
        """Take the run's lock (O_EXCL create). A lock whose heartbeat is stale is broken.

        Returns False when another live process holds the run."""
        self.path.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._lock_is_stale(stale_after):
                    try:
                        self.lock_file.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
            return True
        return False

    def _lock_is_stale(self, stale_after: float) -> bool:
        try:
            info = read_json(self.lock_file)
        except (FileNotFoundError, json.JSONDecodeError):
            return True
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return True          # holder died on this host
            except PermissionError:
                pass
        hb = self.heartbeat()
        last = max(float(info.get("time", 0)), float(hb["time"]) if hb else 0.0)
        return time.time() - last > stale_after

    def release_lock(self) -> None:
        try:
            self.lock_file.unlink()
        except FileNotFoundError:
            pass
