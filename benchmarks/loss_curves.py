"""Training-loss curves of every registered method on `synth`, and the embedded budget they imply.

The budget rule (README "The embedded budget"), written down before any curve was looked at.
It reads training losses on source data only; no validation or target score enters it.
  1. Train every registered method once (seed 0, its defaults, the embedded recipe with one
     `aug_prob` for all) for a long reference budget of REF_STEPS steps.
  2. Smooth each per-step loss curve (train_loss.csv) with a centred moving average over 5% of
     the steps.
  3. L_start = the mean loss over the first 5% of steps, L_end = over the last 10% (the
     convergence verdict's own definitions, dgbench.convergence.start_end). A method
     whose L_end > 0.8 x L_start never left its starting loss: it has no plateau step, and the
     README must state the mechanism that makes it fail.
  4. A method's plateau step is the first step at which the smoothed loss has made 90% of its
     total drop: L(t) <= L_end + 0.1 (L_start - L_end).
  5. The embedded budget is the largest plateau step, rounded up to a multiple of 100 steps. If
     it exceeds 80% of REF_STEPS, the reference runs are repeated at twice the length (--steps).
The outcome is recorded in <results>/budget_<steps>.json, the figure in loss_curves_<steps>.png.

    .venv/bin/python benchmarks/loss_curves.py --run          # train what is missing (resumable), then report
    .venv/bin/python benchmarks/loss_curves.py                # report from the run folders only

It refuses to report while any run is missing or unfinished (a partial figure would mislead);
`--run` trains them with `dgbench sweep` (local executor), which skips done runs and resumes
interrupted ones.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dgbench.convergence import LEFT_START_RATIO, start_end

REF_STEPS = 3000
SMOOTH_FRAC = 0.05
DROP_FRAC = 0.9
ROUND_TO = 100
MAX_SHARE_OF_REF = 0.8     # a budget above 80% of REF_STEPS: repeat the reference runs at 2x


def smooth(loss: np.ndarray, frac: float = SMOOTH_FRAC) -> np.ndarray:
    """Centred moving average over `frac` of the steps (shorter windows at the ends)."""
    w = max(1, int(round(frac * len(loss))))
    c = np.concatenate(([0.0], np.cumsum(loss)))
    lo = np.clip(np.arange(len(loss)) - w // 2, 0, len(loss))
    hi = np.clip(np.arange(len(loss)) + w - w // 2, 0, len(loss))
    return (c[hi] - c[lo]) / (hi - lo)


def plateau(loss) -> dict:
    """The rule's numbers for one per-step loss curve (step 1 first)."""
    loss = np.asarray(loss, dtype=float)
    start, end = start_end(loss)     # the convergence verdict's starting and final loss
    out = {"start": start, "end": end, "left_start": end <= LEFT_START_RATIO * start, "plateau_step": None}
    if out["left_start"]:
        s = smooth(loss)
        out["plateau_step"] = int(np.argmax(s <= end + (1 - DROP_FRAC) * (start - end))) + 1
    return out


def budget(plateaus: dict[str, dict]) -> int | None:
    steps = [p["plateau_step"] for p in plateaus.values() if p["plateau_step"] is not None]
    return int(math.ceil(max(steps) / ROUND_TO) * ROUND_TO) if steps else None


def decide(plateaus: dict[str, dict], ref_steps: int) -> dict:
    """The rule's outcome: {"budget": steps or None, "repeat_at": 2 x ref_steps or None}. A budget
    above 80% of the reference budget is not trusted (the slowest method may have been cut off
    by the reference schedule itself): the reference runs are repeated at twice the length."""
    b = budget(plateaus)
    if b is not None and b > MAX_SHARE_OF_REF * ref_steps:
        return {"budget": None, "repeat_at": 2 * ref_steps, "largest_plateau": b}
    return {"budget": b, "repeat_at": None, "largest_plateau": b}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--results", default="results/budget", help="results folder of the reference runs")
    ap.add_argument("--steps", type=int, default=REF_STEPS, help="reference budget (the rule's REF_STEPS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--run", action="store_true", help="train missing runs first (dgbench sweep, local executor)")
    ap.add_argument("--workers", type=int, default=2, help="--run: worker processes")
    ap.add_argument("--out", default=None, help="figure path (default: <results>/loss_curves_<steps>.png)")
    args = ap.parse_args(argv)

    from dgbench import convergence
    from dgbench.registry import METHODS, load_plugins
    from dgbench.rundir import RunDir
    from dgbench.spec import resolve
    load_plugins()
    methods = args.methods.split(",") if args.methods else METHODS.names()
    results = Path(args.results)
    if args.run:
        exe = shutil.which("dgbench") or str(Path(sys.executable).parent / "dgbench")
        cmd = [exe, "sweep", "--datasets", "synth", "--methods", ",".join(methods), "--seeds", str(args.seed),
               "--steps", str(args.steps), "--results", str(results), "--executor", "local",
               "--workers", str(args.workers)]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)

    plateaus, curves, run_ids, missing = {}, {}, {}, []
    for m in methods:
        spec = resolve("synth", m, args.seed, train={"steps": args.steps})
        run_ids[m] = spec.run_id
        rd = RunDir.for_run(results, spec.run_id)
        if not rd.done_file.exists():
            missing.append(spec.run_id)
            continue
        loss = [v for _, v in convergence.read_train_loss(rd.train_loss)]
        if len(loss) != args.steps:
            raise SystemExit(f"{rd.train_loss}: {len(loss)} per-step losses, expected {args.steps}; "
                             "this run predates per-step loss logging. Delete the run folder and re-run.")
        curves[m], plateaus[m] = np.asarray(loss), plateau(loss)
    if missing:
        print(f"{len(missing)} of {len(methods)} reference runs are not done: {', '.join(missing)}.\n"
              f"Run: {sys.argv[0]} --run --results {results} (resumable)", file=sys.stderr)
        return 1

    print(f"\nreference runs: synth, seed {args.seed}, {args.steps} steps, each method's defaults\n")
    print("| method | L_start | L_end | left start | plateau step |")
    print("|---|---|---|---|---|")
    for m in sorted(plateaus, key=lambda k: (plateaus[k]["plateau_step"] is None, plateaus[k]["plateau_step"] or 0)):
        p = plateaus[m]
        print(f"| {m} | {p['start']:.3f} | {p['end']:.3f} | {'yes' if p['left_start'] else 'NO'} "
              f"| {p['plateau_step'] if p['plateau_step'] else '-'} |")
    outcome = decide(plateaus, args.steps)
    b = outcome["budget"]
    never = [m for m, p in plateaus.items() if not p["left_start"]]
    if outcome["repeat_at"]:
        print(f"\nthe largest plateau step, {outcome['largest_plateau']}, exceeds "
              f"{MAX_SHARE_OF_REF:.0%} of the reference budget: repeat with --steps {outcome['repeat_at']}")
    else:
        print(f"\nembedded budget by the rule: {b} steps")
    if never:
        print(f"never left their starting loss: {', '.join(never)}")
    record = {"dataset": "synth", "seed": args.seed, "ref_steps": args.steps, **outcome,
              "never_left_start": sorted(never),
              "runs": {m: run_ids[m] for m in sorted(plateaus)},     # sorted: the same file whatever --methods' order
              "plateaus": {m: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in plateaus[m].items()}
                           for m in sorted(plateaus)}}
    out_json = results / f"budget_{args.steps}.json"
    out_json.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    print(f"record: {out_json}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    cmap = plt.get_cmap("tab20")
    for i, (m, loss) in enumerate(sorted(curves.items())):
        ax.plot(np.arange(1, len(loss) + 1), smooth(loss), color=cmap(i % 20), lw=1.4, label=m)
        if plateaus[m]["plateau_step"]:
            ax.plot(plateaus[m]["plateau_step"], smooth(loss)[plateaus[m]["plateau_step"] - 1], "o",
                    color=cmap(i % 20), ms=4)
    if b:
        ax.axvline(b, color="k", ls="--", lw=1)
        ax.text(b, ax.get_ylim()[0], f" budget {b}", va="bottom", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving average over {SMOOTH_FRAC:.0%} of steps)")
    ax.set_title(f"synth, seed {args.seed}: every method's training loss; dots = plateau steps")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))   # outside: no curve hidden
    fig.tight_layout()
    out = Path(args.out or results / f"loss_curves_{args.steps}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
