"""The run folder: the only place a run's state and results live.

Layout of ``<results>/runs/<run_id>/``::

    spec.json          the resolved RunSpec (RunSpec.to_dict) plus dgbench/torch versions; it must
                       hash to the folder's name (read_spec), else the folder is "invalid"
    log.txt            human-readable training log (appended across resumes)
    heartbeat.json     {"time": <unix seconds>, "step": int, "host": str, "pid": int}; refreshed while training
    lock               exists while a process trains this run: {"host", "pid", "time"}; it appears
                       with its content in place (hard link of a complete temporary file)
    .lock-guard        empty; flock'ed while a dead holder's lock is broken
    executor.json      who runs it: {"executor", "job_id", "host", "pid", "time"} (written by orchestrate)
    predictions/<case>.npz   image, label and pred of one target case per domain (for figures)
    checkpoints/last.pt, checkpoints/best.pt   full training state (model, optimiser, scheduler, step)
    checkpoints/prev.pt  the checkpoint last.pt replaced: the fallback when last.pt is unreadable
    checkpoints/oracle_target_val.pt  the state at the best target-val score: the ORACLE
                       "oracle-target-val" (dgbench.selection); only for splits with target-val cases
    val_history.csv    step, loss, val_dice (source-val mean Dice) - one row per validation;
                       loss is the mean training loss since the previous validation; a 4th column
                       target_val_dice (the oracle's score) only for splits with target-val cases
    train_loss.csv     step, loss - the training loss of every step, rewritten at each checkpoint
                       (rows up to the checkpointed step; a resume drops rows past it)
    metrics.csv        per-case, per-class Dice, long format (columns: METRIC_COLUMNS)
    done.json          final marker: {"finished", "wall_s", "steps", "best_step", ..., "convergence"}
                       ("convergence": the dgbench.convergence verdict from the two CSV files above)
    failed.json        final marker on error: {"error": last line, "traceback": full text, "time"}

metrics.csv rows: one per (selection, split, case, class). ``selection`` is the checkpoint
rule ("last" = final weights, "source-val" = best source-val mean Dice, "oracle-target-val" = best
target-val mean Dice, an oracle for tables labelled so; see dgbench.selection); ``split`` is "val"
(the held-out source cases), "test" (the target-domain test cases) or "target-val" (target
cases the reference used for validation; only for a table labelled as an oracle); ``dice`` is NaN when the class
is absent from the ground truth (``gt_present`` False; ``pred_present`` says whether the model
predicted it anyway).

All writes are atomic and JSON is strict (dgbench.atomic). Temporary files of a process killed
mid-write are removed by the next process that takes the run's lock.

States (``RunDir.state``), one meaning each: done / failed (a final marker); invalid (spec.json
does not hash to the run id); running (a live process holds the lock); stale (started - a
heartbeat, lock or checkpoint exists - and no live process holds it: interrupted, resumable);
pending (nothing started).
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import traceback
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from dgbench.atomic import _tmp_name, atomic_write_bytes, atomic_write_json, exclusive, is_out_of_space, read_json

METRIC_COLUMNS = ["run_id", "dataset", "method", "setting", "seed", "selection", "split",
                  "domain", "case", "class", "class_name", "dice", "gt_present", "pred_present"]

STATES = ("pending", "running", "stale", "failed", "done", "invalid")
HEARTBEAT_STALE_S = 600.0
RUN_ID_RE = re.compile(r"^(?P<dataset>.+?)_(?P<method>.+)_(?P<setting>full|fewshot-\d+)_s(?P<seed>\d+)_[0-9a-f]{10}$")
TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-\d+\.tmp$")


class RunFolderError(ValueError):
    """A run folder that cannot be trusted as it is. The message names the file and the fix."""


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
    prev_ckpt = property(lambda self: self.path / "checkpoints" / "prev.pt")
    best_ckpt = property(lambda self: self.path / "checkpoints" / "best.pt")
    oracle_ckpt = property(lambda self: self.path / "checkpoints" / "oracle_target_val.pt")
    val_history = property(lambda self: self.path / "val_history.csv")
    train_loss = property(lambda self: self.path / "train_loss.csv")
    metrics_file = property(lambda self: self.path / "metrics.csv")
    done_file = property(lambda self: self.path / "done.json")
    failed_file = property(lambda self: self.path / "failed.json")
    executor_file = property(lambda self: self.path / "executor.json")

    # spec ---------------------------------------------------------------------------------
    def write_spec(self, spec) -> None:
        """Write spec.json for ``spec`` (a RunSpec) unless the folder already has it; a spec.json
        holding another spec is a RunFolderError (the folder was edited or copied). The one
        writer of spec.json: the planner pre-creates it (queued runs show as pending), training
        checks it."""
        old = self.read_spec()
        if old is not None:
            if old != spec.to_dict():
                raise RunFolderError(f"{self.spec_file}: holds a different spec than run {spec.run_id}; the "
                                     f"run folder was edited or copied. Move it away and re-run.")
            return
        from dgbench import __version__
        atomic_write_json(self.spec_file, {"run_id": spec.run_id, "spec": spec.to_dict(),
                                           "dgbench": __version__, "torch": _torch_version()})

    def read_spec(self) -> dict | None:
        """The spec in spec.json (the bare RunSpec dict), checked against the folder: None when
        there is no spec.json yet; RunFolderError when it cannot be read or names another run.

        A spec.json written by dgbench ({"run_id", "spec", ...}) must record the folder's name and,
        when the name is a run id, hash to it. A hand-written bare spec must agree with the
        dataset, method, setting and seed in the folder's name."""
        from dgbench.spec import RunSpec
        name = self.path.name
        fix = (f"Its results cannot be trusted as labelled. To recover, restore the original spec.json, "
               f"or move {self.path} out of {self.path.parent} and re-run: dgbench retrains the run under "
               f"its true id.")
        try:
            data = read_json(self.spec_file)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, OSError) as e:
            raise RunFolderError(f"{self.spec_file}: unreadable ({e}). {fix}") from None
        wrapped = isinstance(data, dict) and isinstance(data.get("spec"), dict)
        spec = data["spec"] if wrapped else data
        if not isinstance(spec, dict):
            raise RunFolderError(f"{self.spec_file}: not a run spec. {fix}")
        m = RUN_ID_RE.match(name)
        if wrapped and "run_id" in data:
            if data["run_id"] != name:
                raise RunFolderError(f"{self.spec_file}: records run id {data['run_id']}, but the folder is "
                                     f"named {name} (renamed or copied?). {fix}")
            if m:
                try:
                    rid = RunSpec.from_dict(spec).run_id
                except (KeyError, TypeError, ValueError) as e:
                    raise RunFolderError(f"{self.spec_file}: not a valid run spec ({e}). {fix}") from None
                if rid != name:
                    raise RunFolderError(f"{self.spec_file}: the spec hashes to run id {rid}, not to its "
                                         f"folder's name {name}: spec.json was edited. {fix}")
        elif m:
            have = {k: str(spec.get(k, "full" if k == "setting" else None)) for k in ("dataset", "method", "setting", "seed")}
            want = {k: m[k] for k in have}
            if have != want:
                raise RunFolderError(f"{self.spec_file}: says {have}, but the folder's name says {want}. {fix}")
        return spec

    def spec_problem(self) -> str | None:
        """Why spec.json cannot be trusted, or None."""
        try:
            self.read_spec()
        except RunFolderError as e:
            return str(e)
        return None

    # state ------------------------------------------------------------------------------
    def state(self, now: float | None = None, stale_after: float = HEARTBEAT_STALE_S) -> str:
        """pending / running / stale / failed / done / invalid, from the files alone (see the
        module docstring). "running" means a live process holds the run, nothing less."""
        if self.spec_problem() is not None:
            return "invalid"
        if self.done_file.exists():
            return "done"
        if self.failed_file.exists():
            return "failed"
        if self.holder_alive(now=now, stale_after=stale_after):
            return "running"
        if self.heartbeat_file.exists() or self.lock_file.exists() or self.last_ckpt.exists():
            return "stale"
        return "pending"

    def heartbeat(self) -> dict | None:
        try:
            hb = read_json(self.heartbeat_file)
        except (OSError, ValueError):
            return None
        return hb if isinstance(hb, dict) else None

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
        """The failure's one-line reason; when failed.json cannot be read, a line that says so
        and where the run's log is (never nothing: status shows it beside the failed run)."""
        try:
            return str(read_json(self.failed_file)["error"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = "no 'error' entry" if isinstance(e, (KeyError, TypeError)) else f"unreadable ({e})"
            return f"{self.failed_file}: {why}; see {self.log_file}"

    # checkpoints ------------------------------------------------------------------------
    def write_checkpoint(self, data: bytes) -> None:
        """checkpoints/last.pt <- data. The checkpoint it replaces stays as prev.pt (a hard link,
        no copy), the fallback when last.pt turns out unreadable."""
        if self.last_ckpt.exists():
            tmp = _tmp_name(self.prev_ckpt)
            try:
                os.link(self.last_ckpt, tmp)
                os.replace(tmp, self.prev_ckpt)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                if is_out_of_space(e):
                    raise
                atomic_write_bytes(self.prev_ckpt, self.last_ckpt.read_bytes())   # no hard links here
        atomic_write_bytes(self.last_ckpt, data)

    def remove_temp_files(self) -> list[Path]:
        """Remove the temporary files of writers killed mid-write. Call holding the lock: then only
        a submitting process may still be writing spec.json or executor.json, and another taker
        its lock file (spared while young)."""
        removed = []
        for folder in (self.path, self.ckpt_dir, self.path / "predictions"):
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                m = TMP_RE.match(e.name)
                if not m or not e.is_file(follow_symlinks=False):
                    continue
                if m["name"] in ("spec.json", "executor.json", "lock"):
                    try:
                        if time.time() - e.stat().st_mtime < 60:
                            continue
                    except FileNotFoundError:
                        continue
                try:
                    os.unlink(e.path)
                    removed.append(Path(e.path))
                except FileNotFoundError:
                    pass
        return removed

    # lock -------------------------------------------------------------------------------
    def lock_info(self) -> dict | None:
        """The lock's content; None without a lock. A lock that cannot be parsed gives
        {"time": its modification time}: while fresh, it counts as held."""
        try:
            info = read_json(self.lock_file)
            if isinstance(info, dict):
                return info
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            pass
        try:
            return {"time": self.lock_file.stat().st_mtime}
        except FileNotFoundError:
            return None

    def holder_alive(self, now: float | None = None, stale_after: float = HEARTBEAT_STALE_S,
                     job_alive: bool | None = None) -> bool:
        """Does a live process hold this run's lock? A dead pid on this host says no for certain;
        for a holder on another host, ``job_alive`` (from the scheduler) decides when known.
        Otherwise the holder is believed alive while its lock or heartbeat is fresh."""
        info = self.lock_info()
        if info is None:
            return False
        if info.get("host") == socket.gethostname() and "pid" in info:
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return False
            except (PermissionError, ValueError, TypeError, OverflowError):
                pass
        elif job_alive is not None:
            return job_alive
        hb = self.heartbeat() or {}
        try:
            last = max(float(info.get("time", 0)), float(hb.get("time", 0)))
        except (TypeError, ValueError):
            last = 0.0
        return (time.time() if now is None else now) - last <= stale_after

    def acquire_lock(self, stale_after: float = HEARTBEAT_STALE_S) -> bool:
        """Take the run's lock; False when a live process holds it. Of several processes calling
        at once exactly one wins: the lock appears with its content in place (a hard link of a
        complete temporary file), and a dead holder's lock is broken under an flock on
        .lock-guard, so that no breaker removes the lock another one has just taken."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._create_lock():
            return True
        with exclusive(self.path / ".lock-guard"):    # without flock: unguarded, two breakers may race
            if self.lock_file.exists() and not self.holder_alive(stale_after=stale_after):
                self.lock_file.unlink(missing_ok=True)
            return self._create_lock()

    def _create_lock(self) -> bool:
        data = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
        tmp = _tmp_name(self.lock_file)
        try:
            tmp.write_text(data)
            os.link(tmp, self.lock_file)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        finally:
            tmp.unlink(missing_ok=True)
        try:                                 # a file system without hard links: O_EXCL, then the content
            fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(data)
        return True

    def release_lock(self) -> None:
        try:
            self.lock_file.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
# every run's state: one code path for `status`, sweep plans and `bench`
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """What the files of one run folder say about it (see ``scan``)."""
    run_id: str
    state: str                    # one of STATES
    spec: dict                    # the bare spec; an invalid run's: the fields of its folder's name
    error: str | None = None      # failed: the last error line; invalid: why spec.json is not trusted
    heartbeat: dict | None = None
    job_id: str | None = None     # the scheduler's job that holds or held it (executor.json)
    checkpoint: bool = False      # checkpoints/last.pt exists (an unfinished run resumes from it)


def _job_id(rd: RunDir) -> str | None:
    try:
        info = read_json(rd.executor_file)
    except (OSError, ValueError):
        return None
    job = info.get("job_id") if isinstance(info, dict) else None
    return None if job is None else str(job)


def scan(results: Path | str, ids: Iterable[str] | None = None, now: float | None = None,
         jobs_alive: Callable[[list[str]], dict[str, bool] | None] | None = None) -> list[RunRecord]:
    """A record per run folder under ``<results>/runs`` (by name), or per run id in ``ids`` (in
    that order; a run without a folder is pending). ``jobs_alive(job ids)`` is the scheduler's
    word on the jobs of "running" runs whose holder is on another host ({job: alive}, or None
    when it cannot be asked); asked once, and a run whose job has ended is "stale"."""
    root = Path(results) / "runs"
    if ids is None:
        try:
            ids = sorted(e.name for e in os.scandir(root) if e.is_dir())
        except FileNotFoundError:
            ids = []
    now = time.time() if now is None else now
    records = []
    for run_id in ids:
        rd = RunDir(root / run_id)
        state = rd.state(now=now)
        if state == "invalid":            # the spec's labels are not to be trusted: the name's
            m = RUN_ID_RE.match(run_id)
            spec, error = (m.groupdict() if m else {}), rd.spec_problem()
        else:
            spec, error = rd.read_spec() or {}, rd.last_error() if state == "failed" else None
        records.append(RunRecord(run_id, state, spec, error, rd.heartbeat(), _job_id(rd), rd.last_ckpt.exists()))
    running = {r.job_id for r in records if r.state == "running" and r.job_id}
    alive = jobs_alive(sorted(running)) if running and jobs_alive else None
    if alive is not None:
        for i, r in enumerate(records):
            if r.job_id in running and not RunDir(root / r.run_id).holder_alive(now=now, job_alive=alive.get(r.job_id, False)):
                records[i] = dataclasses.replace(r, state="stale")
    return records


def _torch_version() -> str:
    """torch.__version__ without importing torch (seconds) in a submitting process."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return "?"
