"""`dgbench status`: run states in a results folder, from rundir.scan (the one reader of state)."""
from __future__ import annotations

import time
from pathlib import Path

from dgbench.orchestrate.jobs import slurm_jobs_alive
from dgbench.rundir import STATES, scan


def collect_status(results: str | Path, now: float | None = None) -> list[dict]:
    """One row per run folder: run_id, state, dataset, method, setting, seed, step, age_s (since
    the last heartbeat), host, job_id, error. Reads a few small files per folder."""
    now = time.time() if now is None else now
    rows = []
    for r in scan(results, now=now, jobs_alive=slurm_jobs_alive):
        row = {"run_id": r.run_id, "state": r.state, "dataset": r.spec.get("dataset", "?"),
               "method": r.spec.get("method", "?"), "setting": r.spec.get("setting", "?"),
               "seed": r.spec.get("seed", "?"), "step": None, "age_s": None, "host": None,
               "job_id": None, "error": r.error}
        if r.state in ("running", "stale", "pending"):
            hb = r.heartbeat or {}
            row.update(step=hb.get("step"), host=hb.get("host"), job_id=r.job_id,
                       age_s=now - float(hb["time"]) if "time" in hb else None)
        rows.append(row)
    return rows


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_status(rows: list[dict], results: str | Path = "", show_all: bool = False) -> str:
    counts = {st: sum(r["state"] == st for r in rows) for st in STATES}
    states = [st for st in STATES if st != "invalid" or counts[st]]   # "invalid" only when there are some
    out = [f"{results}: {len(rows)} runs - " + ", ".join(f"{st} {counts[st]}" for st in states)]
    if not rows:
        return out[0]
    groups: dict[tuple, dict[str, int]] = {}
    for r in rows:
        g = groups.setdefault((r["dataset"], r["method"], r["setting"]), dict.fromkeys(STATES, 0))
        g[r["state"]] += 1
    w = [max(len(str(k[i])) for k in groups) for i in range(3)]
    w = [max(w[0], 7), max(w[1], 6), max(w[2], 7)]
    out.append("")
    out.append(f"{'dataset':<{w[0]}}  {'method':<{w[1]}}  {'setting':<{w[2]}}  "
               + "  ".join(f"{st:>7}" for st in states))
    for k in sorted(groups):
        out.append(f"{k[0]:<{w[0]}}  {k[1]:<{w[1]}}  {k[2]:<{w[2]}}  "
                   + "  ".join(f"{groups[k][st] or '.':>7}" for st in states))
    shown = [r for r in rows if show_all or r["state"] in ("invalid", "failed", "stale", "running")
             or (r["state"] == "pending" and r["job_id"])]
    if shown:
        width = max(len(r["run_id"]) for r in shown)
        out.append("")
        order = {st: i for i, st in enumerate(("invalid", "failed", "stale", "running", "pending", "done"))}
        for r in sorted(shown, key=lambda r: (order[r["state"]], r["run_id"])):
            if r["state"] in ("failed", "invalid"):
                detail = r["error"] or "(no error recorded)"
            elif r["state"] in ("running", "stale"):
                detail = (f"step {r['step']}, last heartbeat {_age(r['age_s'])} ago on {r['host']}"
                          + (f", job {r['job_id']}" if r["job_id"] else "")
                          + (f" - {r['error']}" if r["error"] else ""))
            elif r["state"] == "pending":
                detail = f"queued as job {r['job_id']}" if r["job_id"] else ""
            else:
                detail = ""
            out.append(f"  {r['state']:<8} {r['run_id']:<{width}}  {detail}".rstrip())
    return "\n".join(out)
