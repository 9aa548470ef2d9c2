"""Command-line values shared by the commands: KEY=VALUE, seeds, training overrides, the one
METHOD.KEY=VALUE hyperparameter parser (bench and sweep), and the executor options."""
from __future__ import annotations

import argparse
from typing import Any

from dgbench.errors import UserError
from dgbench.orchestrate.executors import EXECUTORS
from dgbench.orchestrate.sweep import as_seeds
from dgbench.spec import check_hparams, parse_value


def parse_kv(text: str) -> tuple[str, Any]:
    """KEY=VALUE with the value parsed (numbers as numbers, then YAML)."""
    import yaml
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), parse_value(value)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not a number or YAML ({e})") from None


def kv_raw(text: str) -> tuple[str, Any]:
    """KEY=VALUE kept as text (sbatch values such as 1:00:00 are not numbers); KEY= is a flag."""
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value if value else True


def seeds(text: str) -> list[int]:
    """0,1,2 or 0-2."""
    try:
        return as_seeds(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def method_hparams(pairs, methods: list[str], everyone: list[str] | None = None,
                   command: str = "sweep") -> dict[str, dict]:
    """--hparam pairs -> {method: {key: value}}, for `bench` and `sweep` alike.

    METHOD.KEY=VALUE sets KEY for METHOD, which must be one of ``methods`` (the command's);
    KEY=VALUE sets it for every method in ``everyone`` (default: all of ``methods``). A key the
    method does not declare (its class's ``defaults``) is a UserError naming the ones it has."""
    everyone = list(methods) if everyone is None else everyone
    out: dict[str, dict] = {}
    for key, value in pairs or []:
        target, dot, name = key.partition(".")
        if dot and target not in methods:
            raise UserError(f"--hparam {key}=...: {target!r} is not a method of this {command} "
                            f"({', '.join(methods) or 'none'}); write METHOD.KEY=VALUE with one of them, or "
                            f"KEY=VALUE for every method")
        for method in [target] if dot else everyone:
            out.setdefault(method, {})[name if dot else key] = value
    for method, hp in out.items():
        check_hparams(method, hp, "--hparam")
    return out


def train_overrides(args: argparse.Namespace) -> dict:
    """--train KEY=VALUE pairs with the named shortcuts (--steps, --batch-size, ...) over them."""
    t = dict(args.train or [])
    for key in ("steps", "batch_size", "val_every", "ckpt_every"):
        if getattr(args, key, None) is not None:
            t[key] = getattr(args, key)
    return t


def add_train_args(p: argparse.ArgumentParser, hparam_help: str) -> None:
    p.add_argument("--steps", type=int, help="training steps (override)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="batch size (override)")
    p.add_argument("--train", type=parse_kv, action="append", metavar="KEY=VALUE",
                   help="any training option, e.g. --train lr=1e-3 --train patch_size=[64,64,64] (repeatable)")
    p.add_argument("--hparam", type=parse_kv, action="append", metavar="[METHOD.]KEY=VALUE", help=hparam_help)


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """Executor options, shared by `sweep` and `bench`."""
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="inline (this process; default), local (process pool), slurm (job array)")
    g.add_argument("--workers", type=int, help="local: worker processes (default: one per GPU, or 1)")
    g.add_argument("--gpus", help="local: GPU ids for the workers, e.g. 0,1,2,3")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--account", help="slurm: account")
    g.add_argument("--qos", help="slurm: quality of service")
    g.add_argument("--time", type=int, help="slurm: time limit per run in minutes (default 1440; keep > 10)")
    g.add_argument("--gpus-per-run", type=int, dest="gpus_per_run", help="slurm: GPUs per run (default 0)")
    g.add_argument("--cpus-per-run", type=int, dest="cpus_per_run", help="slurm: CPUs per run (default 1)")
    g.add_argument("--mem-gb", type=float, dest="mem_gb", help="slurm: memory per run in GB")
    g.add_argument("--array-parallelism", type=int, dest="array_parallelism",
                   help="slurm: at most this many runs at once (default 256)")
    g.add_argument("--sbatch", type=kv_raw, action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: extra sbatch option, e.g. --sbatch constraint=a100 (repeatable)")
    g.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="slurm: shell line run before each job, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--wait", action="store_true", help="slurm: block until every run has ended")


def executor_options(args: argparse.Namespace, cfg: dict | None = None) -> tuple[str, dict]:
    """(executor name, options) from parsed args over a sweep file's executor settings."""
    cfg = cfg or {}
    name = args.executor or cfg.get("executor") or "inline"
    opts = dict(cfg.get(name) or {}) if name in ("local", "slurm") else {}
    if name == "local":
        cli = {"workers": args.workers, "gpus": args.gpus}
    elif name == "slurm":
        cli = {"partition": args.partition, "account": args.account, "qos": args.qos,
               "time": args.time, "gpus": args.gpus_per_run, "cpus": args.cpus_per_run,
               "mem_gb": args.mem_gb, "array_parallelism": args.array_parallelism}
        if args.sbatch:
            opts["sbatch"] = {**(opts.get("sbatch") or {}), **dict(args.sbatch)}
        if args.setup:
            opts["setup"] = list(opts.get("setup") or []) + list(args.setup)
        opts.setdefault("wait", False)
        if args.wait:
            opts["wait"] = True
    else:
        cli = {}
    opts.update({k: v for k, v in cli.items() if v is not None})
    return name, opts
