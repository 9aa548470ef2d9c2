"""`dgbench` command line. Each sub-command has --help."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path


from dgbench.orchestrate import parse_kv  # KEY=VALUE, numbers parsed as numbers

# modules that add their own sub-commands through register_cli(subparsers)
CLI_MODULES = ["dgbench.orchestrate", "dgbench.report", "dgbench.pretrain"]


def _seeds(text: str) -> list[int]:
    from dgbench.orchestrate import as_seeds
    return as_seeds(text)


def _hparams_for(method: str, pairs, unqualified: bool = True) -> dict:
    """--hparam KEY=VALUE applies to every method (unless ``unqualified`` is False: the --versus
    method keeps its own defaults); --hparam METHOD.KEY=VALUE to that one only."""
    out = {}
    for key, value in pairs or []:
        target, dot, name = key.rpartition(".")
        if not dot:
            if unqualified:
                out[key] = value
        elif target == method:
            out[name] = value
    return out


def _has_gpu() -> bool:
    import torch
    return torch.cuda.is_available()


def bench_specs(args) -> list:
    """The runs `bench` means: every --method x seed, plus the --versus method's runs (same
    dataset, setting, seeds and training options; its own hyperparameter defaults) when it is
    not listed. Run ids are spec hashes, so its done runs are reused."""
    from dgbench.spec import resolve
    train = dict(args.train or [])
    for key in ("steps", "batch_size"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    methods = [m for m in args.method.split(",") if m]
    if methods == ["all"]:
        from dgbench.registry import METHODS, load_plugins
        load_plugins()
        methods = METHODS.names()
    versus = args.versus.strip()
    named = methods + ([versus] if versus and versus.lower() != "none" and versus not in methods else [])
    for key, _ in args.hparam or []:
        target, dot, _name = key.rpartition(".")
        if dot and target not in named:
            raise ValueError(f"--hparam {key}=...: {target!r} is not a method of this bench ({', '.join(named)}); "
                             f"write METHOD.NAME=VALUE with one of them, or NAME=VALUE for every --method")
    specs = [resolve(args.dataset, m, seed=s, setting=args.setting, hparams=_hparams_for(m, args.hparam),
                     train=train) for m in methods for s in args.seeds]
    if versus.lower() != "none" and versus and versus not in methods:
        specs += [resolve(args.dataset, versus, seed=s, setting=args.setting, train=train,
                          hparams=_hparams_for(versus, args.hparam, unqualified=False)) for s in args.seeds]
    return specs


def cmd_bench(args) -> int:
    from dgbench import orchestrate, preflight, report
    specs = bench_specs(args)
    results = Path(args.results)
    name, opts = orchestrate.executor_options(args)
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
    print(f"{len(specs)} run(s) in {wall:.1f} s ({name} executor): " + ", ".join(f"{sum(v == st for v in states.values())} {st}"
                                                             for st in sorted(set(states.values()))))
    print(f"run folders: {(results / 'runs').resolve()}/<run id>  (spec.json, log.txt, metrics.csv, ...)")
    print(f"rebuild paper tables: dgbench tables --results {results}")
    return 0 if all(v == "done" for v in states.values()) else 1


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgbench", description="Domain-generalization benchmark harness for 3D "
                                "biomedical segmentation. `dgbench COMMAND --help` for each command.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    b.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="seeds, e.g. 0,1,2 or 0-2 (default 0,1,2)")
    b.add_argument("--setting", default="full", help="full or fewshot-N (default full)")
    b.add_argument("--results", default="results", help="results folder (default ./results)")
    b.add_argument("--steps", type=int, help="training steps (shorten for smoke runs)")
    b.add_argument("--batch-size", type=int, dest="batch_size", help="batch size")
    b.add_argument("--train", type=parse_kv, action="append", metavar="KEY=VALUE",
                   help="any training option, e.g. --train lr=1e-3 --train patch_size=[64,64,64]")
    b.add_argument("--hparam", type=parse_kv, action="append", metavar="KEY=VALUE",
                   help="method hyperparameter, e.g. --hparam p=0.5 (METHOD.KEY=VALUE with several methods)")
    from dgbench.orchestrate import add_executor_args
    add_executor_args(b)
    b.set_defaults(func=cmd_bench)

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
    for mod in CLI_MODULES:
        importlib.import_module(mod).register_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from dgbench.data.io import DataError
    from dgbench.rundir import is_out_of_space
    try:
        return int(args.func(args) or 0)
    except (DataError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dgbench {args.command}: error: {msg}", file=sys.stderr)
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
