"""Writes the small fake results tree under tests/golden/results (committed; rerun only to change it).

Hand-chosen Dice values: base per (dataset, method), plus small offsets per case, class, seed,
selection and split, so every table value can be checked by hand:

- datasets amos (3 classes; 'duodenum' absent from every target case, 'kidney' absent from
  target case mri2) and prostate (1 class, two target domains BIDMC and BMC);
- methods erm, gin, maskgen; seeds 0 and 1; selections source-val and last; amos runs (its split
  has target-val cases) also have the oracle selection oracle-target-val (+0.02 over source-val),
  prostate runs do not (no target-val cases: its column is left out of the oracle tables);
- prostate: erm (seeds 0,1) and gin (seed 0) have the same mean -> a tie;
- gin / prostate / seed 1 has no folder -> missing; erm / amos / seed 1 failed (failed.json);
- few-shot (fewshot-2) on amos: maskgen and erm seed 0 done, gin seed 0 incomplete (stale
  heartbeat), everything else missing.
- convergence (10 steps, validations at steps 5 and 10): done runs have a converged
  train_loss.csv and val_history.csv, except amos / gin / seed 1, whose loss and source-val Dice
  are still improving (not converged: marked † in the tables); amos / erm / fewshot-2 has only
  val_history.csv (a run folder from before train_loss.csv: judged from interval means) and
  amos / maskgen / fewshot-2 has neither (convergence unknown: marked †).

Usage: python tests/golden/make_tree.py
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).parent / "results"
COLUMNS = ["run_id", "dataset", "method", "setting", "seed", "selection", "split", "domain", "case",
           "class", "class_name", "dice", "gt_present", "pred_present"]
BASE = {("amos", "erm"): 0.60, ("amos", "gin"): 0.65, ("amos", "maskgen"): 0.70,
        ("prostate", "erm"): 0.80, ("prostate", "gin"): 0.80, ("prostate", "maskgen"): 0.85}
CLASSES = {"amos": [(1, "liver"), (2, "kidney"), (3, "duodenum")], "prostate": [(1, "prostate")]}
CASES = {"amos": {"val": [("CT", "ct1"), ("CT", "ct2")], "test": [("MRI", "mri1"), ("MRI", "mri2"), ("MRI", "mri3")]},
         "prostate": {"val": [("RUNMC", "r1"), ("I2CVB", "i1")],
                      "test": [("BIDMC", "b1"), ("BIDMC", "b2"), ("BMC", "m1"), ("BMC", "m2")]}}
CONVERGED = ([1.5, 1.2, 0.9, 0.7, 0.6, 0.55, 0.52, 0.5, 0.5, 0.5], (0.60, 0.61))
STILL_LEARNING = ([1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8, 0.6, 0.4], (0.50, 0.60))
VAL_BONUS = {"amos": 0.1, "prostate": 0.05}      # source-val scores above target ones, Dice <= 1
CASE_OFF = {0: 0.05, 1: 0.0, 2: -0.05, 3: 0.02}
CLASS_OFF = {1: 0.02, 2: -0.02, 3: 0.0}
SEED_OFF = {0: -0.01, 1: 0.01}
# per (dataset, method) case perturbations that sum to zero over the cases (and over mri1/mri3,
# where 'kidney' is present), so the means stay round while the paired tests are not degenerate
JITTER = {("amos", "gin"): (-0.03, 0.0, 0.03), ("amos", "maskgen"): (0.04, 0.0, -0.04),
          ("prostate", "gin"): (0.02, -0.02, 0.01, -0.01), ("prostate", "maskgen"): (0.03, -0.01, -0.04, 0.02)}


def run_id(ds, meth, setting, seed):
    h = hashlib.sha1(f"{ds}/{meth}/{setting}/{seed}".encode()).hexdigest()[:10]
    return f"{ds}_{meth}_{setting}_s{seed}_{h}"


def write_history(d, losses, val_dice, per_step=True):
    """train_loss.csv (one loss per step) and val_history.csv (validations at steps 5 and 10)."""
    if per_step:
        (d / "train_loss.csv").write_text("step,loss\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(losses)))
    rows = [(5, sum(losses[:5]) / 5, val_dice[0]), (10, sum(losses[5:]) / 5, val_dice[1])]
    (d / "val_history.csv").write_text("step,loss,val_dice\n" + "".join(f"{s},{l:.6f},{v:.6f}\n" for s, l, v in rows))


def write_run(ds, meth, setting, seed, state="done", seed_off=None, extra=0.0, history="converged"):
    rid = run_id(ds, meth, setting, seed)
    d = ROOT / "runs" / rid
    d.mkdir(parents=True)
    spec = {"dataset": ds, "method": meth, "seed": seed, "setting": setting, "hparams": {},
            "train": {"steps": 10}, "split_sha": "golden"}
    (d / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    if state == "failed":
        (d / "failed.json").write_text(json.dumps({"error": "RuntimeError: CUDA out of memory",
                                                   "time": "2025-01-01T00:00:00",
                                                   "traceback": "Traceback ...\nRuntimeError: CUDA out of memory"}) + "\n")
        return rid
    if state == "stale":
        (d / "heartbeat.json").write_text(json.dumps({"time": 0, "step": 5, "host": "h", "pid": 1}) + "\n")
        return rid
    rows = []
    so = SEED_OFF[seed] if seed_off is None else seed_off
    sels = (("source-val", 0.0), ("last", -0.03)) + ((("oracle-target-val", 0.02),) if ds == "amos" else ())
    for sel, sel_off in sels:
        for split in ("val", "test"):
            for i, (dom, case) in enumerate(CASES[ds][split]):
                for k, name in CLASSES[ds]:
                    present = not (split == "test" and (k == 3 or (k == 2 and case == "mri2")))
                    v = BASE[ds, meth] + CASE_OFF[i] + CLASS_OFF[k] + so + sel_off + extra + (VAL_BONUS[ds] if split == "val" else JITTER.get((ds, meth), (0.0,) * 4)[i])
                    rows.append([rid, ds, meth, setting, seed, sel, split, dom, case, k, name,
                                 f"{v:.4f}" if present else "", present, present or k == 3 and i == 0])
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(rows)
    (d / "done.json").write_text(json.dumps({"finished": "2025-01-01T00:00:00", "steps": 10}) + "\n")
    if history == "converged":
        write_history(d, *CONVERGED)
    elif history == "still-learning":
        write_history(d, *STILL_LEARNING)
    elif history == "val_history only":
        write_history(d, *CONVERGED, per_step=False)
    return rid


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for ds in ("amos", "prostate"):
        for meth in ("erm", "gin", "maskgen"):
            for seed in (0, 1):
                if (ds, meth, seed) == ("prostate", "gin", 1):
                    continue                                  # missing
                if (ds, meth, seed) == ("amos", "erm", 1):
                    write_run(ds, meth, "full", seed, state="failed")
                    continue
                write_run(ds, meth, "full", seed, seed_off=0.0 if (ds, meth) == ("prostate", "gin") else None,
                          history="still-learning" if (ds, meth, seed) == ("amos", "gin", 1) else "converged")
    write_run("amos", "maskgen", "fewshot-2", 0, extra=-0.2, history=None)
    write_run("amos", "erm", "fewshot-2", 0, extra=-0.25, history="val_history only")
    write_run("amos", "gin", "fewshot-2", 0, state="stale")


if __name__ == "__main__":
    main()
