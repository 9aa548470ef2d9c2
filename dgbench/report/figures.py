"""Figures (matplotlib's object API: no pyplot state, no display needed)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dgbench.report.common import SCALE, _slug
from dgbench.report.collect import Collection

log = logging.getLogger("dgbench.report")


# ------------------------------------------------------------------------------------------
# figures (matplotlib's object API: no pyplot state, no display needed)
# ------------------------------------------------------------------------------------------
def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, bbox_inches="tight", metadata={"Software": None} if ext == "png" else None)
        tmp.replace(p)
        paths.append(p)
    return paths


def fig_dice_bars(main_csv: pd.DataFrame, labels: list[str], methods: list[str], out: Path,
                  stem: str = "dice_bars", title: str = "") -> list[Path]:
    """Grouped bars: mean Dice per dataset and method, error bars = s.d. over seeds."""
    if not labels or not methods:
        return []
    df = main_csv.set_index("method")
    fig = _new_figure(max(4.0, 1.1 * len(labels) * max(1, len(methods)) * 0.35 + 2), 3.4)
    ax = fig.add_subplot(111)
    width = 0.8 / len(methods)
    x = np.arange(len(labels))
    cmap = _method_colors(methods)
    for i, meth in enumerate(methods):
        mean = np.array([df.at[meth, f"{L}.mean"] if f"{L}.mean" in df else np.nan for L in labels], float)
        sd = np.array([df.at[meth, f"{L}.sd"] if f"{L}.sd" in df else np.nan for L in labels], float)
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, np.nan_to_num(mean), width, yerr=np.nan_to_num(sd),
               capsize=2, label=meth, color=cmap[meth], edgecolor="black", linewidth=0.4)
        for xi in xs[~np.isfinite(mean)]:                  # no result: say so, not a zero bar
            ax.text(xi, 1.5, "n/a", ha="center", va="bottom", rotation=90, fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("target mean Dice (×100)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, ncol=min(len(methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out, stem)


def fig_avg_rank(ranks: pd.DataFrame, out: Path, stem: str = "avg_rank", title: str = "") -> list[Path]:
    """Horizontal bars of the average rank (lower is better) with bootstrap 95% CIs."""
    avg = ranks[ranks["scope"] == "average"].sort_values(["rank", "method"], ascending=[False, True])
    if avg.empty:
        return []
    fig = _new_figure(5.0, 0.45 * len(avg) + 1.2)
    ax = fig.add_subplot(111)
    y = np.arange(len(avg))
    rank = avg["rank"].to_numpy(float)
    lo, hi = avg["rank_ci_lo"].to_numpy(float), avg["rank_ci_hi"].to_numpy(float)
    err = np.vstack([np.nan_to_num(rank - lo), np.nan_to_num(hi - rank)])
    cmap = _method_colors(sorted(avg["method"]))
    ax.barh(y, rank, xerr=err if np.isfinite(lo).any() else None, capsize=3,
            color=[cmap[m] for m in avg["method"]], edgecolor="black", linewidth=0.4)
    ax.set_yticks(y)
    ax.set_yticklabels(avg["method"])
    ax.set_xlabel("average rank over datasets (1 = best)" + ("; bars: bootstrap 95% CI" if np.isfinite(lo).any() else ""))
    ax.set_xlim(0, max(len(avg), np.nanmax(np.r_[rank, hi[np.isfinite(hi)]])) + 0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out, stem)


def _method_colors(methods: list[str]) -> dict:
    from matplotlib import colormaps
    cm = colormaps["tab10"] if len(methods) <= 10 else colormaps["tab20"]
    return {m: cm(i % cm.N) for i, m in enumerate(sorted(methods))}


def _load_prediction(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            d = {k: np.asarray(z[k]) for k in ("image", "label", "pred")}
    except (OSError, KeyError, ValueError) as e:
        log.warning("skipping %s: %s", path, e)
        return None
    if not (d["image"].ndim == d["label"].ndim == d["pred"].ndim == 3
            and d["image"].shape == d["label"].shape == d["pred"].shape):
        log.warning("skipping %s: image/label/pred must be 3-D arrays of one shape", path)
        return None
    return d


def fig_slices(col: Collection, used_runs: pd.DataFrame, selection: str, dataset: str, out: Path,
               methods: list[str] | None = None) -> list[Path]:
    """One target case, the slice with the most foreground: image, GT, each method's prediction.

    Reads ``<run>/predictions/<case>.npz`` (see the module docstring). Returns [] and logs a
    note when no run of the dataset has predictions."""
    ur = used_runs[(used_runs["dataset"] == dataset) & (used_runs["setting"] == "full")]
    avail: dict[str, dict[str, Path]] = {}               # case -> method -> file (lowest seed)
    for r in ur.sort_values(["method", "seed", "run_id"]).itertuples():
        pdir = Path(r.path) / "predictions"
        if not pdir.is_dir():
            continue
        for f in sorted(pdir.glob("*.npz")):
            avail.setdefault(f.stem, {}).setdefault(r.method, f)
    if not avail:
        log.info("no predictions/<case>.npz in any %s run: example-slice figure skipped", dataset)
        return []
    case = sorted(avail, key=lambda c: (-len(avail[c]), c))[0]
    files = avail[case]
    meths = [m for m in (methods or sorted(files)) if m in files]
    preds = {m: _load_prediction(files[m]) for m in meths}
    preds = {m: d for m, d in preds.items() if d is not None}
    if not preds:
        log.info("predictions for %s case %s unreadable: example-slice figure skipped", dataset, case)
        return []
    first = next(iter(preds.values()))
    img, gt = first["image"].astype(float), first["label"].astype(int)
    z = int(np.argmax((gt > 0).reshape(gt.shape[0], -1).sum(axis=1)))
    # case Dice from metrics.csv, for the panel titles
    m = col.rows(selection, "test")
    run_of = {meth: files[meth].parent.parent.name for meth in preds}
    mm = m[(m["run_id"].isin(run_of.values())) & (m["case"].astype(str) == case)]
    case_dice = mm.assign(d=mm["dice"].where(mm["gt_present"])).groupby("run_id")["d"].mean()
    n_lab = int(max(gt.max(), max(int(d["pred"].max()) for d in preds.values()), 1))
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    base = colormaps["tab20"] if n_lab > 10 else colormaps["tab10"]
    lab_cmap = ListedColormap([base(i % base.N) for i in range(n_lab)])
    panels = [("image", None), ("ground truth", gt)] + [(meth, d["pred"].astype(int)) for meth, d in preds.items()]
    fig = _new_figure(2.2 * len(panels), 2.6)
    lo, hi = np.percentile(img[z], [1, 99]) if np.ptp(img[z]) > 0 else (0.0, 1.0)
    for i, (name, lab) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if lab is not None:
            s = lab[z]
            ax.imshow(np.ma.masked_where(s == 0, s - 1), cmap=lab_cmap, vmin=0, vmax=n_lab - 1, alpha=0.55,
                      interpolation="nearest")
        t = name
        if name in run_of and run_of[name] in case_dice.index and np.isfinite(case_dice[run_of[name]]):
            t += f"\nDice {case_dice[run_of[name]] * SCALE:.1f}"
        ax.set_title(t, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{dataset}: target case {case}, slice {z} (axis 0)", fontsize=9)
    return _save(fig, out, f"slices_{_slug(dataset)}")
