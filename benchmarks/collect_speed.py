"""How long does collecting results take? Writes N fake run folders and times dgbench.report.

Each fake run: spec.json, done.json and a metrics.csv with 2 selections × (4 val + 20 test)
cases × 15 classes = 720 rows (an AMOS-sized run). Target: 300 folders collected in < 5 s.

    .venv/bin/python benchmarks/collect_speed.py [--runs 300] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_fake_results(root: Path, n_runs: int, n_classes: int = 15, n_val: int = 4, n_test: int = 20,
                       seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    header = ("run_id,dataset,method,setting,seed,selection,split,domain,case,class,class_name,"
              "dice,gt_present,pred_present\n")
    datasets = ["amos", "brats", "cow", "hvsmr", "pancreas", "prostate"]
    methods = ["erm", "bigaug", "randconv", "gin", "mixstyle", "dsu", "slaug", "synthseg", "advbias", "maskgen"]
    ids = []
    for i in range(n_runs):
        ds, meth = datasets[i % len(datasets)], methods[(i // len(datasets)) % len(methods)]
        s = i // (len(datasets) * len(methods))
        rid = f"{ds}_{meth}_full_s{s}_{i:010x}"
        d = root / "runs" / rid
        d.mkdir(parents=True)
        (d / "spec.json").write_text(json.dumps({"dataset": ds, "method": meth, "seed": s, "setting": "full",
                                                 "hparams": {}, "train": {}, "split_sha": "x"}))
        lines = [header]
        dice = rng.uniform(0.3, 0.95, size=(2, n_val + n_test, n_classes))
        absent = rng.random(size=dice.shape) < 0.05
        for a, sel in enumerate(("last", "source-val")):
            for c in range(n_val + n_test):
                split, dom = ("val", "src") if c < n_val else ("test", "tgt")
                for k in range(n_classes):
                    pres = not absent[a, c, k]
                    v = f"{dice[a, c, k]:.6f}" if pres else ""
                    lines.append(f"{rid},{ds},{meth},full,{s},{sel},{split},{dom},case{c:03d},{k + 1},"
                                 f"class{k + 1},{v},{pres},True\n")
        (d / "metrics.csv").write_text("".join(lines))
        (d / "done.json").write_text("{}")
        ids.append(rid)
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--keep", type=Path, default=None, help="write the fake tree here and keep it")
    args = ap.parse_args(argv)
    from dgbench.report import collect, run_scores, write_tables
    tmp = Path(tempfile.mkdtemp(prefix="dgbench_collect_")) if args.keep is None else args.keep
    try:
        t0 = time.perf_counter()
        write_fake_results(tmp, args.runs)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        col = collect(tmp)
        t_collect = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_scores(col.metrics)
        t_scores = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_tables(tmp, tmp / "tables", n_boot=1000, figures=False)
        t_tables = time.perf_counter() - t0
        n_rows = len(col.metrics)
        print(f"{args.runs} run folders, {n_rows} metric rows (fake tree written in {t_write:.2f} s)")
        print(f"collect():            {t_collect:.2f} s   (target < 5 s: {'OK' if t_collect < 5 else 'TOO SLOW'})")
        print(f"run_scores():         {t_scores:.2f} s")
        print(f"write_tables() total: {t_tables:.2f} s   (collect + all tables + 1000 bootstrap resamples, no figures)")
        return 0 if t_collect < 5 else 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
