"""Validate raw NIfTI once and store it preprocessed: RAS orientation, the dataset's spacing,
intensity normalised by the image's own modality, as .npy files that patches are read from
through a memory map (no whole-volume loads during training).

Layout: ``<cache>/prepared/<dataset>-<key>/`` with ``<case>.img.npy`` (float32),
``<case>.lbl.npy`` (uint8), ``<case>.json`` (per-case record, written last) and ``index.json``
(written when every case is in). The key hashes every preprocessing parameter, so changing one
makes a new cache instead of mixing old and new arrays.

Each record (and the index) holds a fingerprint of the case's source files ("source": image and
label, each {path, size, mtime_ns, sha1}). `prepare` compares size and mtime, and hashes a file
only when one of them moved: a changed file is re-validated and re-cached (index.json is removed
first, so nothing reads a half-updated cache), a file with the same content (a copy, a `touch`)
only gets its fingerprint refreshed. Training (`ensure_prepared`) makes the same check and
refuses a changed file (re-preparing a generated dataset instead), so stale arrays are never served.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dgbench.data.adapter import Case, DatasetAdapter, cache_dir
from dgbench.data.io import DataError, check_finite, check_labels, check_pair, load_nifti
from dgbench.atomic import atomic_write_bytes, atomic_write_json, exclusive

log = logging.getLogger("dgbench")

PREP_VERSION = 1
FG_SAMPLES = 2000   # stored foreground voxel coordinates per class, for oversampling


def cache_key(adapter: DatasetAdapter) -> str:
    params = {"dataset": adapter.name, "version": PREP_VERSION, "spacing": adapter.spacing,
              "modalities": adapter.domains, "remap": {str(k): v for k, v in adapter.label_remap.items()},
              "classes": {str(k): v for k, v in adapter.classes.items()}, "ct_window": list(adapter.ct_window)}
    if getattr(adapter, "cache_tag", ""):   # e.g. which user folder / which image variant
        params["tag"] = adapter.cache_tag
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def prepared_dir(adapter: DatasetAdapter) -> Path:
    return cache_dir() / "prepared" / f"{adapter.name}-{cache_key(adapter)}"


def normalise(img: np.ndarray, modality: str, ct_window=(-1024.0, 1024.0)) -> np.ndarray:
    """CT: the dataset's HU window (default -1024..1024) to [0,1], clipped. MR: per-volume min-max to [0,1]."""
    img = img.astype(np.float32)
    if modality == "ct":
        lo, hi = ct_window
        return np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def resample(arr: np.ndarray, spacing, target, order: int) -> np.ndarray:
    if target is None or np.allclose(spacing, target, atol=1e-3):
        return arr
    shape = [max(1, int(round(n * s / t))) for n, s, t in zip(arr.shape, spacing, target)]
    return ndimage.zoom(arr, [n / o for n, o in zip(shape, arr.shape)], order=order, mode="nearest", grid_mode=True)


def fingerprint(path: Path) -> dict:
    """What a cached case was made from: the file's path, size, mtime and SHA-1."""
    st = os.stat(path)
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha1": h.hexdigest()}


def file_status(fp: dict | None, path: Path) -> tuple[str, dict | None]:
    """("same" | "touched" | "changed" | "gone", the file's fingerprint now). Size and mtime
    first; the file is hashed only when one of them moved ("touched": same content)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "gone", None
    if fp and fp.get("path") == str(path) and (st.st_size, st.st_mtime_ns) == (fp.get("size"), fp.get("mtime_ns")):
        return "same", fp
    now = fingerprint(path)
    return ("touched" if fp and now["sha1"] == fp.get("sha1") else "changed"), now


def source_files(case: Case) -> dict[str, Path]:
    return {"image": Path(case.image), "label": Path(case.label)}


def preprocess_case(adapter: DatasetAdapter, case: Case) -> tuple[np.ndarray, np.ndarray, dict]:
    source = {k: fingerprint(p) for k, p in source_files(case).items()}   # before reading: a later edit shows
    img, img_aff, spacing = load_nifti(case.image, channel=case.channel)
    check_finite(case.image, np.asarray(img))
    lbl, lbl_aff, _ = load_nifti(case.label)
    check_pair(case.image, img.shape, img_aff, case.label, lbl.shape, lbl_aff)
    lbl = check_labels(case.label, adapter.remap_labels(np.asarray(lbl)), adapter.n_classes)
    modality = adapter.domains[case.domain]
    img = normalise(np.asarray(img), modality, adapter.ct_window)
    img = resample(img, spacing, adapter.spacing, order=1).astype(np.float32)
    lbl = resample(lbl, spacing, adapter.spacing, order=0).astype(np.uint8)
    rng = np.random.default_rng(0)
    fg = {}
    for c in range(1, adapter.n_classes):
        idx = np.argwhere(lbl == c)
        if len(idx):
            fg[str(c)] = idx[rng.choice(len(idx), min(len(idx), FG_SAMPLES), replace=False)].tolist()
    meta = {"case": case.case_id, "domain": case.domain, "modality": modality, "shape": list(img.shape),
            "source_spacing": list(spacing), "image": str(case.image), "label": str(case.label),
            "classes_present": sorted(int(k) for k in fg), "fg": fg, "source": source}
    return img, lbl, meta


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _prepare_one(args) -> dict:
    adapter, case, out = args
    record = out / f"{case.case_id}.json"
    if record.exists():
        return json.loads(record.read_text())
    img, lbl, meta = preprocess_case(adapter, case)
    atomic_write_bytes(out / f"{case.case_id}.img.npy", _npy_bytes(img))
    atomic_write_bytes(out / f"{case.case_id}.lbl.npy", _npy_bytes(lbl))
    atomic_write_json(record, meta)   # last: its presence means the case is complete
    return meta


def _recheck_record(record: Path, case: Case) -> str | None:
    """Compare a cached case with its source files now. None when it may be kept (a fingerprint
    whose size or mtime moved over the same content is refreshed); else why it must be re-cached."""
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError):
        return f"its cache record {record} is unreadable"
    source = meta.get("source")
    if not isinstance(source, dict):
        return "cached by an older dgbench, without a fingerprint of its files"
    now, why = {}, []
    for name, path in source_files(case).items():
        status, now[name] = file_status(source.get(name), path)
        if status in ("changed", "gone"):
            why.append(f"{path} {'is gone' if status == 'gone' else 'changed since it was cached'}")
    if why:
        return "; ".join(why)
    if now != source:
        atomic_write_json(record, {**meta, "source": now})
    return None


def prepare(adapter: DatasetAdapter, root: Path | None = None, workers: int = 1, progress: bool = True) -> dict:
    """Validate and cache every case of the dataset's split. Resumable: finished cases are kept.

    Stops at the first bad case with a DataError naming its file; cases cached before it stay."""
    from dgbench.progress import progress as progress_bar
    root = Path(root) if root else adapter.default_root()
    adapter.ensure_raw(root)
    cases = adapter.find_cases(root)
    split = adapter.split_for(cases)   # a split derived from the files is realised (and checked) here
    found = {c.case_id: c for c in cases}
    missing = [c for c in split.all_cases() if c not in found]
    if missing:
        raise DataError(f"{split.path}: {len(missing)} split case(s) not found under {root}: "
                        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}. Is the download complete, "
                        f"and is --root the dataset's top folder?")
    empty = [d for d, ids in split.test.items() if not ids]
    if empty:
        counts = {}
        for c in cases:
            counts[c.domain] = counts.get(c.domain, 0) + 1
        raise DataError(f"{split.path}: target domain(s) {empty} have no test cases (cases found under {root} "
                        f"per domain: {counts}). Every target domain needs cases: check the domain manifest "
                        f"and the dataset's target domains.")
    out = prepared_dir(adapter)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(adapter, found[c], out) for c in split.all_cases()]
    recache = {}
    for _, case, _ in todo:
        record = out / f"{case.case_id}.json"
        why = _recheck_record(record, case) if record.exists() else None
        if why:
            recache[case.case_id] = (record, why)
    if recache:
        (out / "index.json").unlink(missing_ok=True)     # incomplete until every case is re-cached
        for case_id, (record, why) in recache.items():
            log.warning("%s: re-validating and re-caching case %s: %s", adapter.name, case_id, why)
            record.unlink(missing_ok=True)
    metas = []
    bar = progress_bar(len(todo), f"prepare {adapter.name}", "case", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for meta in pool.map(_prepare_one, todo):
                metas.append(meta)
                bar.update()
    else:
        for item in todo:
            metas.append(_prepare_one(item))
            bar.update()
    bar.close()
    index = {"dataset": adapter.name, "key": cache_key(adapter), "root": str(root), "split_sha1": split.sha1,
             "split_path": str(split.path),
             "cases": {m["case"]: {k: m.get(k) for k in ("domain", "modality", "shape", "classes_present",
                                                     "source_spacing", "source")}
                       for m in metas}}
    atomic_write_json(out / "index.json", index)
    return index


def summary(adapter: DatasetAdapter, index: dict) -> str:
    """What `dgbench prepare` prints: cases per domain, spacing and size statistics, and anything odd
    (classes absent from a whole domain, cases without foreground, strong resampling, adapter notes)."""
    by_dom: dict[str, list[dict]] = {}
    for c in index["cases"].values():
        by_dom.setdefault(c["domain"], []).append(c)
    lines = ["per domain: cases, source spacing in mm and cached size in voxels (median [min - max])"]
    problems = list(getattr(adapter, "notes", []))
    for dom, cs in sorted(by_dom.items()):
        sp, sh = np.array([c["source_spacing"] for c in cs]), np.array([c["shape"] for c in cs])
        fmt = lambda a, f: "x".join(f % v for v in a)
        lines.append(f"  {dom} ({cs[0]['modality']}): {len(cs)} cases, spacing {fmt(np.median(sp, 0), '%.2f')} "
                     f"[{fmt(sp.min(0), '%.2f')} - {fmt(sp.max(0), '%.2f')}], size {fmt(np.median(sh, 0), '%d')} "
                     f"[{fmt(sh.min(0), '%d')} - {fmt(sh.max(0), '%d')}]")
        absent = sorted(set(range(1, adapter.n_classes)) - {k for c in cs for k in c["classes_present"]})
        if absent:
            problems.append(f"{dom}: classes absent from every case: "
                            + ", ".join(f"{k} {adapter.classes.get(k, '?')}" for k in absent))
        empty = [k for k, c in index["cases"].items() if c["domain"] == dom and not c["classes_present"]]
        if empty:
            problems.append(f"{dom}: {len(empty)} case(s) without any foreground label: {empty[:5]}")
        if adapter.spacing is not None:
            zoom = np.median(sp, 0) / np.asarray(adapter.spacing)
            if zoom.max() > 4 or zoom.min() < 0.25:
                problems.append(f"{dom}: resampling to {adapter.spacing} mm zooms the median case by "
                                f"{fmt(zoom, '%.2g')} per axis; check the dataset spacing (docs/datasets.md)")
    lines.append(f"split: {index.get('split_path', '?')} (sha1 {index['split_sha1'][:12]})")
    lines += [f"note: {p}" for p in problems] or ["no problems found"]
    return "\n".join(lines)


@dataclass
class PreparedCase:
    case_id: str
    domain: str
    image: np.ndarray          # memory-mapped float32 (D, H, W)
    label: np.ndarray          # memory-mapped uint8 (D, H, W)
    fg: dict[int, np.ndarray]  # class -> (n, 3) voxel coordinates


class Prepared:
    """Read access to a prepared cache; arrays are memory-mapped on first use."""

    def __init__(self, adapter: DatasetAdapter):
        self.adapter = adapter
        self.dir = prepared_dir(adapter)
        path = self.dir / "index.json"
        if not path.exists():
            raise DataError(f"{path}: dataset {adapter.name!r} is not prepared. Run "
                            f"`dgbench prepare {adapter.name} --root PATH` first.")
        self.index = json.loads(path.read_text())
        self._open: dict[str, PreparedCase] = {}

    @property
    def case_ids(self) -> list[str]:
        return list(self.index["cases"])

    def changed_sources(self) -> list[str]:
        """Source files that changed since they were cached. Files that are gone are not counted
        (the cache may outlive the raw data); nor are caches made before fingerprints were recorded."""
        return [fp["path"] for c in self.index["cases"].values() for fp in (c.get("source") or {}).values()
                if file_status(fp, Path(fp["path"]))[0] == "changed"]

    def case(self, case_id: str) -> PreparedCase:
        if case_id not in self._open:
            if case_id not in self.index["cases"]:
                raise DataError(f"{self.dir / 'index.json'}: case {case_id} is not in the prepared cache; "
                                f"re-run `dgbench prepare {self.adapter.name}`.")
            meta = json.loads((self.dir / f"{case_id}.json").read_text())
            self._open[case_id] = PreparedCase(
                case_id, meta["domain"],
                np.load(self.dir / f"{case_id}.img.npy", mmap_mode="r"),
                np.load(self.dir / f"{case_id}.lbl.npy", mmap_mode="r"),
                {int(k): np.asarray(v, dtype=np.int64) for k, v in meta["fg"].items()})
        return self._open[case_id]


def ensure_prepared(adapter: DatasetAdapter) -> Prepared:
    """The prepared cache. Datasets that generate themselves (synth) are made and prepared on
    demand, by one process at a time (others wait on an flock beside the cache, then find it
    made); a real dataset must have been prepared with `dgbench prepare` for the current split."""
    if adapter.generated:
        with exclusive(generation_lock(adapter)):
            return _ensure_prepared(adapter)
    return _ensure_prepared(adapter)


def generation_lock(adapter: DatasetAdapter) -> Path:
    """The flock file beside a generated dataset's prepared cache (held while it is made)."""
    d = prepared_dir(adapter)
    return d.with_name(d.name + ".lock")


def _ensure_prepared(adapter: DatasetAdapter) -> Prepared:
    path = prepared_dir(adapter) / "index.json"
    current = path.exists() and json.loads(path.read_text()).get("split_sha1") == adapter.split().sha1
    if not current:
        if not adapter.generated:
            if path.exists():
                raise DataError(f"{path}: prepared for another version of {adapter.split_path}; "
                                f"re-run `dgbench prepare {adapter.name} --root PATH`.")
            Prepared(adapter)  # raises the "run dgbench prepare" error
        prepare(adapter)
    prepared = Prepared(adapter)
    changed = prepared.changed_sources()
    if changed and adapter.generated:
        prepare(adapter)                     # re-validates and re-caches what changed
        return Prepared(adapter)
    if changed:
        raise DataError(f"{changed[0]}: changed since {adapter.name} was prepared"
                        + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                        + f"; its cached arrays are stale. Run `dgbench prepare {adapter.name} --root "
                          f"{prepared.index.get('root', 'PATH')}` to re-validate and re-cache it.")
    return prepared
