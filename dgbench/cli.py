"""`dgbench` command line. Each sub-command has --help.

Every command's arguments are defined here (shared values in dgbench.cli_args), except `tables`
and `pretrain-features`, which their modules register (`register_cli(subparsers)`, listed in
LAZY_MODULES). A command imports what it needs when it runs: `status` and `sweep --dry-run` never
import torch, matplotlib or pandas. A UserError (dgbench.errors) is printed as one line; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path

from dgbench.cli_args import (add_executor_args, add_train_args, executor_options, method_hparams, seeds,
                              train_overrides)
from dgbench.errors import UserError
from dgbench.rundir import STATES

# sub-commands registered by their own modules; imported only for their command or a help listing
LAZY_MODULES = {"tables": "dgbench.report", "pretrain-features": "dgbench.pretrain"}


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def _has_gpu() -> bool:
    import torch
    return torch.cuda.is_available()


def bench_specs(args) -> list:
    """The runs `bench` means: every --method x seed, plus the --versus method's runs (same
    dataset, setting, seeds and training options; its own hyperparameter defaults) when it is
    not listed. Run ids are spec hashes, so its done runs are reused."""
    from dgbench.registry import method_names
    from dgbench.spec import resolve
    train = train_overrides(args)
    methods = [m for m in args.method.split(",") if m]
    if methods == ["all"]:
        methods = method_names()
    versus = args.versus.strip()
    extra = [versus] if versus and versus.lower() != "none" and versus not in methods else []
    hp = method_hparams(args.hparam, methods + extra, everyone=methods, command="bench")
    return [resolve(args.dataset, m, seed=s, setting=args.setting, hparams=hp.get(m), train=train)
            for m in methods + extra for s in args.seeds]


def cmd_bench(args) -> int:
    from dgbench import orchestrate, preflight, report
    specs = bench_specs(args)
    results = Path(args.results)
    name, opts = executor_options(args)
    if args.executor is None and len(specs) > 1 and not _has_gpu():
        # CPU: one single-threaded worker per run, up to one more than the cores. Measured faster
        # than runs in sequence with all threads (small 3-D convolutions scale poorly across threads).
        name, opts = "local", {"workers": min(len(specs), (os.cpu_count() or 1) + 1), "threads": 1}
    if name == "slurm":
        opts["wait"] = True      # bench prints a table, so it waits for its runs
    todo = [s for s, act, _ in orchestrate.plan_runs(specs, results) if act in orchestrate.TODO]
    preflight.require(todo, name, opts)              # the sweep's checks: stops with every problem
    from dgbench.data.cache import ensure_prepared
    from dgbench.registry import DATASETS
    ensure_prepared(DATASETS.get(args.dataset)())    # once, here, before any worker needs it (makes synth)
    t0 = time.time()
    states = orchestrate.run_specs(specs, results, executor=name, **opts)
    wall = time.time() - t0
    print()
    print(report.bench_table(results, [s.run_id for s in specs]))
    warning = report.convergence_warning(results, [s.run_id for s in specs])
    if warning:
        print(warning)
    print()
    print(f"{len(specs)} run(s) in {wall:.1f} s ({name} executor): "
          + ", ".join(f"{sum(v == st for v in states.values())} {st}" for st in sorted(set(states.values()))))
    print(f"run folders: {(results / 'runs').resolve()}/<run id>  (spec.json, log.txt, metrics.csv, ...)")
    print(f"rebuild paper tables: dgbench tables --results {results}")
    return 0 if all(v == "done" for v in states.values()) else 1


# ---------------------------------------------------------------------------------------------
# sweep, status, run
# ---------------------------------------------------------------------------------------------
def sweep_config(args) -> dict:
    """The sweep file (if any) with the command line's datasets, methods, settings, seeds,
    training options and --hparam over it."""
    from dgbench.orchestrate import load_sweep, sweep_methods
    cfg = load_sweep(args.file) if args.file else {}
    for key in ("datasets", "methods", "settings", "seeds"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
            for grid in cfg.get("grids") or []:
                grid.pop(key, None)
    cfg["train"] = {**(cfg.get("train") or {}), **train_overrides(args)}
    for method, hp in method_hparams(args.hparam, sweep_methods(cfg)).items():
        cfg.setdefault("hparams", {}).setdefault(method, {}).update(hp)
    return cfg


def cmd_sweep(args) -> int:
    from dgbench import cost, orchestrate, preflight
    from dgbench.rundir import RunDir
    cfg = sweep_config(args)
    results = Path(args.results or cfg.get("results") or "results")
    retry = args.retry_failed or bool(cfg.get("retry_failed"))
    table = cost.load_table(args.cost_table) if args.dry_run else None   # a bad file fails first
    unusable = preflight.split_problems(orchestrate.sweep_datasets(cfg))
    specs = orchestrate.sweep_specs(cfg, skip=unusable)
    plan = orchestrate.plan_runs(specs, results, retry_failed=retry)
    print(orchestrate.format_plan(plan, verbose=args.dry_run))
    name, opts = executor_options(args, cfg)
    todo = [s for s, act, _ in plan if act in orchestrate.TODO]
    report = preflight.check(todo, name, opts, extra=unusable.values())
    if args.dry_run:
        print(report.format())
        left = [(s, s.train.steps - orchestrate.progress_steps(RunDir.for_run(results, s.run_id), s)) for s in todo]
        print(cost.estimate(specs, left, table).format())
        return 1 if report.problems else 0
    if report.problems:
        raise preflight.PreflightError(report.format())
    t0 = time.time()
    states = orchestrate.run_specs(specs, results, executor=name, retry_failed=retry, **opts)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st] = counts.get(st, 0) + 1
    print(f"{name}: " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
          + f" ({time.time() - t0:.1f} s); `dgbench status --results {results}` for details")
    return 1 if any(st in ("failed", "interrupted", "invalid") for st in states.values()) else 0


def cmd_status(args) -> int:
    from dgbench.orchestrate.status import collect_status, format_status
    from dgbench.atomic import to_json
    rows = collect_status(args.results)
    if args.state:
        rows = [r for r in rows if r["state"] in args.state]
    if args.json:
        print(to_json(rows, indent=1))
    else:
        print(format_status(rows, args.results, show_all=args.all))
    return 0


def cmd_run(args) -> int:
    from dgbench.orchestrate import spec_from_file
    path = Path(args.path)
    spec_file = path / "spec.json" if path.is_dir() else path
    spec = spec_from_file(spec_file)
    if args.results:
        results = Path(args.results)
    elif spec_file.parent.parent.name == "runs":
        results = spec_file.parent.parent.parent
    else:
        raise UserError(f"{spec_file} is not inside <results>/runs/<run_id>/: give --results")
    from dgbench.train import execute
    state = execute(spec, results)
    print(f"{spec.run_id}: {state}")
    return {"done": 0, "failed": 1, "invalid": 2}.get(state, 3)


# ---------------------------------------------------------------------------------------------
# datasets, methods, prepare
# ---------------------------------------------------------------------------------------------
def cmd_datasets(args) -> int:
    from dgbench.data.cache import prepared_dir
    from dgbench.data.io import DataError
    from dgbench.registry import DATASETS
    for name in DATASETS.names():
        a = DATASETS.get(name)()
        try:
            sp = a.split()
            sizes = f"train {len(sp.train)} / val {len(sp.val)} / " + (
                    "target-val " + " + ".join(f"{len(v)} {d}" for d, v in sp.target_val.items()) + " / "
                    if sp.target_val else "") + "test " + " + ".join(f"{len(v)} {d}" for d, v in sp.test.items())
            if sp.provisional:
                sizes = (f"derived from the files when prepared (rule: "
                         f"{Path(a.split_rule()['path']).name}; dgbench prepare {name} --root PATH)")
        except DataError as e:
            sizes = f"(split: {e})"
        prepared = (prepared_dir(a) / "index.json").exists()
        state = "prepared" if prepared else ("generated on first use" if a.generated else
                                              f"not prepared (dgbench prepare {name} --root PATH)")
        print(f"{name}: {a.description}")
        print(f"  domains: source {', '.join(a.source_domains)} -> target {', '.join(a.target_domains)}")
        print(f"  classes: {', '.join(v for k, v in sorted(a.classes.items()) if k)}")
        print(f"  split:   {sizes}")
        print(f"  data:    {state}")
    return 0


def cmd_methods(args) -> int:
    from dgbench.registry import METHODS
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        hp = ", ".join(f"{k}={v}" for k, v in cls.defaults.items()) or "-"
        print(f"{name:22s} {doc}\n{'':22s} hyperparameters: {hp}")
    return 0


def cmd_prepare(args) -> int:
    from dgbench.data.cache import prepare, prepared_dir, summary
    from dgbench.registry import DATASETS
    a = DATASETS.get(args.dataset)()
    index = prepare(a, Path(args.root) if args.root else None, workers=args.workers)
    by_domain: dict[str, int] = {}
    for c in index["cases"].values():
        by_domain[c["domain"]] = by_domain.get(c["domain"], 0) + 1
    print(f"prepared {len(index['cases'])} cases of {a.name} in {prepared_dir(a)}: "
          + ", ".join(f"{n} {d}" for d, n in by_domain.items()))
    print(summary(a, index))
    return 0


# ---------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------
def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="train and evaluate methods on a dataset, print the Dice table",
                       description="Run (or resume) every method x seed on one dataset, plus the --versus "
                                   "method (default erm) for comparison, and print a Dice table: rows = "
                                   "methods, columns = source-val and each target domain. Cells from runs "
                                   "that did not converge are marked † and a warning says why.")
    b.add_argument("--method", default="maskgen", help="method name(s), comma-separated, or 'all' registered methods (default maskgen)")
    b.add_argument("--versus", default="erm", metavar="METHOD",
                   help="also run this method (same dataset, seeds and training options; its own "
                        "hyperparameter defaults) and show it in the table; done runs are reused "
                        "(default erm; 'none' = only --method)")
    b.add_argument("--dataset", default="synth", help="dataset name (default: the embedded synth benchmark)")
    b.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="seeds, e.g. 0,1,2 or 0-2 (default 0,1,2)")
    b.add_argument("--setting", default="full", help="full or fewshot-N (default full)")
    b.add_argument("--results", default="results", help="results folder (default ./results)")
    add_train_args(b, "method hyperparameter: KEY=VALUE for every --method (not --versus), METHOD.KEY=VALUE "
                      "for one of them, e.g. --hparam p=0.5 (repeatable)")
    add_executor_args(b)
    b.set_defaults(func=cmd_bench)


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep", help="expand a grid of runs and run what is not done yet",
        description="Expand datasets x methods x settings x seeds (from flags or a YAML sweep "
                    "file; flags win) and run what is not done: done runs are skipped, "
                    "interrupted runs resume from their last checkpoint, failed runs are "
                    "reported (re-run with --retry-failed). First a preflight checks what the runs "
                    "need (datasets prepared in the jobs' cache, split checksums, extractor weights, "
                    "executor options) and stops with every problem and its fix.")
    p.add_argument("--file", "-f", help="YAML sweep file (see sweeps/*.yaml)")
    p.add_argument("--datasets", help="comma-separated dataset names")
    p.add_argument("--methods", help="comma-separated method names")
    p.add_argument("--settings", help="comma-separated settings: full, fewshot-N (default full)")
    p.add_argument("--seeds", help="seeds: 0,1,2 or 0-2 (default 0)")
    p.add_argument("--results", help="results folder (default: the file's, or results)")
    p.add_argument("--val-every", type=int, dest="val_every", help="validate every N steps (override)")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every", help="checkpoint every N steps (override)")
    add_train_args(p, "method hyperparameter: METHOD.KEY=VALUE for one method of the sweep, KEY=VALUE for "
                      "every method (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed runs too")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run, what is done and what would resume, the preflight checks "
                        "and the estimated cost; run nothing (exit 1 when the preflight finds problems)")
    p.add_argument("--cost-table", dest="cost_table", metavar="FILE",
                   help="step times for the --dry-run cost estimate, replacing dgbench/costs.yaml "
                        "(default: $DGBENCH_COST_TABLE, else that file)")
    add_executor_args(p)
    p.set_defaults(func=cmd_sweep)


def _add_status_run(sub) -> None:
    p = sub.add_parser(
        "status", help="run states in a results folder",
        description="Counts and a table of runs by state (pending / running / stale / failed / "
                    "done, and invalid: spec.json does not hash to the run id), read from the run "
                    "folders. running = a live process holds the run; stale = not done and nothing "
                    "alive holds it (interrupted; the next sweep resumes it). Failed and invalid runs "
                    "with their error, stale and running runs with their last heartbeat.")
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument("--state", action="append", choices=STATES, help="only runs in this state (repeatable)")
    p.add_argument("--all", action="store_true", help="list every run, done and pending too")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "run", help="run one run from its spec.json or run folder",
        description="Run (or resume) one run in this process from a spec.json file or a run "
                    "folder <results>/runs/<run_id>. Exit status 0 done, 1 failed, 2 invalid "
                    "(the folder's spec.json does not hash to its id), 3 busy or interrupted.")
    p.add_argument("path", help="spec.json or run folder")
    p.add_argument("--results", help="results folder (default: the one the run folder is in)")
    p.set_defaults(func=cmd_run)


def _add_listings(sub) -> None:
    d = sub.add_parser("datasets", help="list datasets, their domains, classes, splits and data state",
                       description="List every registered dataset.")
    d.set_defaults(func=cmd_datasets)
    m = sub.add_parser("methods", help="list methods and their hyperparameter defaults",
                       description="List every registered method.")
    m.set_defaults(func=cmd_methods)
    pr = sub.add_parser("prepare", help="validate a dataset and build its preprocessing cache",
                        description="Validate every file of a dataset's split and cache it preprocessed "
                                    "(RAS, target spacing, normalised). Resumable.")
    pr.add_argument("dataset")
    pr.add_argument("--root", help="the dataset folder as downloaded")
    pr.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    pr.set_defaults(func=cmd_prepare)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (one of this module's), the modules of LAZY_MODULES
    are not imported (their commands cannot be parsed then)."""
    p = argparse.ArgumentParser(prog="dgbench", description="Domain-generalization benchmark harness for 3D "
                                "biomedical segmentation. `dgbench COMMAND --help` for each command.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_bench(sub)
    _add_listings(sub)
    _add_sweep(sub)
    _add_status_run(sub)
    if command is None or command in LAZY_MODULES:
        for module in LAZY_MODULES.values():
            importlib.import_module(module).register_cli(sub)
    return p


OWN_COMMANDS = ("bench", "datasets", "methods", "prepare", "sweep", "status", "run")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in OWN_COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from dgbench.data.io import DataError
    from dgbench.rundir import RunFolderError
    from dgbench.atomic import is_out_of_space
    try:
        return int(args.func(args) or 0)
    except (UserError, DataError, RunFolderError) as e:
        print(f"dgbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not is_out_of_space(e):
            raise
        where = Path(e.filename).parent if e.filename else Path.cwd()
        print(f"dgbench {args.command}: error: out of disk space writing {e.filename or '?'}; free space in "
              f"{where} and run the command again (finished work is kept)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
