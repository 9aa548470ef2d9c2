"""Preflight: what a sweep (or bench) needs, checked before anything is submitted or run.

Without it, a sweep over an unprepared dataset, or one that needs anatomix weights the cluster's
cache lacks, submits every job and each fails on its own node hours later. `check` looks at the
runs that would run (done ones need nothing) and answers with every problem at once, each with
its fix:
  datasets    prepared in the cache the jobs will use (`$DGBENCH_CACHE`, or the value a Slurm
              `--setup "export DGBENCH_CACHE=..."` line gives the jobs); source files unchanged
              since; checked, never prepared here (a generated dataset, `synth`, is made on
              first use and needs nothing)
  splits      the split file loads and its checksum is the one each run was specified with
              (`RunSpec.split_sha`) and the one the cache was prepared for
  extractors  the weights file of every `extractor` a run's hyperparameters name resolves and
              matches its checksum (no download, no network built)
  executor    its options are complete: known option names; local: the GPU ids exist; slurm:
              sbatch/sinfo answer, the partition exists (or the cluster has a default), the time
              limit fits the partition and is > 10 minutes, GPUs per run are stated (0 for CPU
              jobs) and the partition has GPUs when asked for
"""
from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

from dgbench import orchestrate
from dgbench.errors import UserError
from dgbench.spec import RunSpec

SETUP_ENV_RE = re.compile(r"^\s*(?:export\s+)?(DGBENCH_[A-Z0-9_]+)=(\S+)\s*$")
SLURM_MIN_TIME = 10      # minutes; submitit takes every signal for a timeout below this


@dataclass(frozen=True)
class Problem:
    what: str            # the problem, naming the dataset / file / option
    fix: str = ""        # the exact fix ("" when `what` already ends with it)


class PreflightError(UserError):
    """Some runs cannot work as configured; the message lists every problem and its fix."""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# where the jobs run: their environment
# ---------------------------------------------------------------------------------------------
def job_environment(executor: str, opts: dict) -> dict[str, str]:
    """DGBENCH_* variables the jobs get on top of this process's environment: a Slurm setup line
    `export DGBENCH_CACHE=/shared/cache` (jobs inherit the rest of the environment through sbatch;
    local workers inherit all of it)."""
    env = {}
    if executor == "slurm":
        for line in opts.get("setup") or []:
            m = SETUP_ENV_RE.match(str(line))
            if m:
                value = m.group(2).strip("'\"")
                env[m.group(1)] = os.path.expanduser(os.path.expandvars(value))
    return env


@contextlib.contextmanager
def environment(overrides: dict[str, str]):
    old = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cache_origin(env: dict[str, str]) -> str:
    from dgbench.data.adapter import cache_dir
    if "DGBENCH_CACHE" in env:
        how = "from the Slurm setup line"
    elif os.environ.get("DGBENCH_CACHE"):
        how = "$DGBENCH_CACHE"
    else:
        how = "the default; $DGBENCH_CACHE moves it"
    return f"{cache_dir()} ({how})"


# ---------------------------------------------------------------------------------------------
# datasets and splits: dgbench.preflight_datasets
# ---------------------------------------------------------------------------------------------
def split_problems(datasets: Iterable[str]) -> dict[str, Problem]:
    """{dataset: problem} for the datasets whose runs cannot even be specified (an unknown name, a
    split file that cannot be read)."""
    from dgbench.preflight_datasets import adapter_and_split
    found = {name: adapter_and_split(name) for name in dict.fromkeys(datasets)}
    return {name: p for name, p in found.items() if isinstance(p, Problem)}


# ---------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------
def check_extractors(specs: list[RunSpec]) -> tuple[list[Problem], list[str]]:
    """Every (extractor, weights) that runs' hyperparameters name, resolved and verified once.
    Torch-free for anatomix and the bundled extractors (dgbench.models.weights)."""
    needs: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        if "extractor" in s.hparams:
            needs.setdefault((s.hparams["extractor"], s.hparams.get("extractor_weights")), []).append(s)
    problems, notes = [], []
    if not needs:
        return problems, notes
    from dgbench.models.weights import ExtractorWeightsError, check_weights
    for (name, weights), runs in needs.items():
        who = (f"needed by {plural(len(runs), 'run')} of {', '.join(sorted({r.method for r in runs}))} "
               f"on {', '.join(sorted({r.dataset for r in runs}))}")
        label = f"extractor {name}" + (f" (extractor_weights={weights})" if weights else "")
        try:
            notes.append(f"{label}: {check_weights(name, weights)}")
        except (ExtractorWeightsError, KeyError, ValueError) as e:
            problems.append(Problem(f"{label}, {who}: {e.args[0] if isinstance(e, KeyError) else e}"))
    return problems, notes


# ---------------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------------
def parse_slurm_time(text: str) -> int | None:
    """Minutes from a Slurm time limit ('1-00:00:00', '2:00:00', '30:00', '90'); None = no limit."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:                                 # days-hours[:minutes[:seconds]]
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 3:                    # hours:minutes:seconds
        h, m, s = parts
    else:                                    # minutes[:seconds]
        h, m, s = 0, parts[0], (parts[1] if len(parts) > 1 else 0)
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def parse_sinfo(text: str) -> dict[str, dict]:
    """`sinfo -h -o '%P|%l|%G'` -> {partition: {"default": bool, "max_minutes": int|None,
    "gpus": bool}} (a partition spans several lines when its nodes differ)."""
    parts: dict[str, dict] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0]:
            continue
        name = fields[0].rstrip("*")
        p = parts.setdefault(name, {"default": False, "max_minutes": 0, "gpus": False})
        p["default"] |= fields[0].endswith("*")
        limit = parse_slurm_time(fields[1])
        p["max_minutes"] = None if limit is None or p["max_minutes"] is None else max(p["max_minutes"], limit)
        p["gpus"] |= "gpu" in fields[2].lower()
    return parts


def slurm_partitions() -> tuple[dict[str, dict] | None, str]:
    """(partitions, "") from sinfo, or (None, why Slurm cannot be asked from here)."""
    if shutil.which("sbatch") is None:
        return None, "`sbatch` is not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%l|%G"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`sinfo` did not answer ({e})"
    if out.returncode != 0:
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        return None, f"`sinfo` failed: {said[-1] if said else f'exit {out.returncode}'}"
    return parse_sinfo(out.stdout), ""


def _unknown_options(executor: str, opts: dict) -> list[Problem]:
    cls = orchestrate.executor_class(executor)
    known = set(inspect.signature(cls).parameters)
    bad = sorted(set(opts) - known)
    return [Problem(f"{executor} executor: unknown option(s) {bad}",
                    f"remove them from the sweep file's `{executor}:` section (known: {', '.join(sorted(known)) or 'none'})")] if bad else []


def check_local(opts: dict) -> tuple[list[Problem], str]:
    problems = []
    workers = opts.get("workers")
    if workers is not None and not (str(workers).isdigit() and int(workers) >= 1):
        problems.append(Problem(f"local executor: workers {workers!r} is not a whole number >= 1",
                                "pass --workers N (make sweep WORKERS=N) with N >= 1"))
    gpus = orchestrate.as_list(opts.get("gpus"))
    if gpus:
        import torch
        n = torch.cuda.device_count()
        bad = [g for g in gpus if not (g.isdigit() and int(g) < n)]
        if bad:
            problems.append(Problem(
                f"local executor: GPU id(s) {', '.join(bad)} (--gpus or the sweep file's local.gpus), but this "
                f"machine has {plural(n, 'CUDA device')}",
                f"pass --gpus with ids below {n} (make sweep GPUS=0,1)" if n else
                "run on a machine with GPUs, or pass --gpus '' to train on this CPU"))
    return problems, f"local: {opts.get('workers') or max(1, len(gpus))} worker(s)" + (f" on GPU(s) {', '.join(gpus)}" if gpus else "")


def check_slurm(opts: dict) -> tuple[list[Problem], str]:
    problems = []
    time_min = opts.get("time", 1440)
    gpus = opts.get("gpus")
    try:
        time_min = int(time_min)
    except (TypeError, ValueError):
        problems.append(Problem(f"slurm executor: time {time_min!r} is not a number of minutes",
                                "pass --time MINUTES (make sweep TIME=1440)"))
        time_min = None
    if time_min is not None and time_min <= SLURM_MIN_TIME:
        problems.append(Problem(f"slurm executor: time limit {time_min} min is too short (submitit takes every "
                                f"signal for a timeout below {SLURM_MIN_TIME + 1} min)",
                                "pass --time 60 or more (make sweep TIME=1440)"))
    if gpus is None:
        problems.append(Problem("slurm executor: GPUs per run not given (the jobs would get none and train on CPU)",
                                "pass --gpus-per-run 1 (make sweep GPUS_PER_RUN=1), or --gpus-per-run 0 for "
                                "CPU-only jobs"))
    partitions, why = slurm_partitions()
    if partitions is None:
        problems.append(Problem(f"slurm executor: cannot ask the cluster from here: {why}",
                                "submit from a Slurm login node (where `sinfo` works), or choose --executor "
                                "local / inline"))
        return problems, ""
    named = orchestrate.as_list(opts.get("partition") or (opts.get("sbatch") or {}).get("partition"))
    listing = ", ".join(f"{p}{'*' if v['default'] else ''}" for p, v in sorted(partitions.items())) or "none"
    if named:
        unknown = [p for p in named if p not in partitions]
        if unknown:
            problems.append(Problem(f"slurm executor: partition {', '.join(unknown)} does not exist on this cluster "
                                    f"(partitions: {listing})", "pass --partition NAME (make sweep PARTITION=NAME)"))
        chosen = [partitions[p] for p in named if p in partitions]
    else:
        chosen = [v for v in partitions.values() if v["default"]]
        if not chosen:
            problems.append(Problem(f"slurm executor: no partition given and the cluster has no default one "
                                    f"(partitions: {listing})", "pass --partition NAME (make sweep PARTITION=NAME)"))
    if chosen and time_min is not None:
        limits = [v["max_minutes"] for v in chosen]
        most = None if None in limits else max(limits)
        if most is not None and time_min > most:
            problems.append(Problem(f"slurm executor: time limit {time_min} min exceeds the partition's maximum of "
                                    f"{most} min (sbatch refuses the jobs, or they wait forever: PartitionTimeLimit)",
                                    f"pass --time {most} (make sweep TIME={most}); a run that times out is "
                                    f"requeued and resumes from its last checkpoint"))
    if chosen and gpus and not any(v["gpus"] for v in chosen):
        problems.append(Problem(f"slurm executor: {gpus} GPU(s) per run asked for, but partition "
                                f"{', '.join(named) or '(default)'} has no GPUs (sinfo shows no gpu gres)",
                                "pass --partition with a GPU partition (make sweep PARTITION=NAME)"))
    part = ",".join(named) or ",".join(p for p, v in sorted(partitions.items()) if v["default"]) + " (default)"
    return problems, f"slurm: {part}, {time_min} min, {gpus if gpus is not None else '?'} GPU(s) per run"


def check_executor(executor: str, opts: dict) -> tuple[list[Problem], str]:
    if executor not in orchestrate.EXECUTORS:
        return [Problem(f"unknown executor {executor!r}", f"use one of {', '.join(orchestrate.EXECUTORS)}")], ""
    problems = _unknown_options(executor, opts)
    if executor == "local":
        more, note = check_local(opts)
    elif executor == "slurm":
        more, note = check_slurm(opts)
    else:
        more, note = [], "inline: in this process"
    return problems + more, note


# ---------------------------------------------------------------------------------------------
# all of it
# ---------------------------------------------------------------------------------------------
@dataclass
class Report:
    problems: list[Problem]
    checked: list[str]

    def format(self) -> str:
        if not self.problems:
            return "preflight: ok\n" + "\n".join(f"  {c}" for c in self.checked)
        lines = [f"preflight: {plural(len(self.problems), 'problem')}; nothing was submitted or run. Fix, then run "
                 f"the command again:"]
        for i, p in enumerate(self.problems, 1):
            lines.append(f"  {i}. {p.what}")
            if p.fix:
                lines.append(f"     fix: {p.fix}")
        if self.checked:
            lines.append("  passed: " + "; ".join(self.checked))
        return "\n".join(lines)


def check(specs: Iterable[RunSpec], executor: str = "inline", opts: dict | None = None,
          extra: Iterable[Problem] = ()) -> Report:
    """Everything the runs `specs` need, checked in the environment their jobs will have.
    `extra`: problems found earlier (split files that stopped runs from being specified)."""
    specs, opts = list(specs), dict(opts or {})
    problems, checked = list(extra), []
    env = job_environment(executor, opts)
    with environment(env):
        if specs:
            checked.append(f"cache {_cache_origin(env)}")
        by_dataset: dict[str, list[RunSpec]] = {}
        for s in specs:
            by_dataset.setdefault(s.dataset, []).append(s)
        from dgbench.preflight_datasets import check_dataset
        for name, runs in by_dataset.items():
            more, note = check_dataset(name, runs)
            problems += more
            if note and not more:
                checked.append(note)
        more, notes = check_extractors(specs)
        problems += more
        checked += notes
    more, note = check_executor(executor, opts)
    problems += more
    if note and not more:
        checked.append(note)
    return Report(problems, checked)


def require(specs: Iterable[RunSpec], executor: str = "inline", opts: dict | None = None,
            extra: Iterable[Problem] = ()) -> Report:
    """check(), raising PreflightError with the whole report when anything is wrong."""
    report = check(specs, executor, opts, extra)
    if report.problems:
        raise PreflightError(report.format())
    return report
