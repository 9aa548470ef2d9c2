"""Bad inputs: changed, NaN, corrupt and unlisted files, and target domains without cases. Each
ends in an error that names the file and the fix, or in a re-validated cache: never in stale
arrays or silently skipped data."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dgbench.data.cache import Prepared, ensure_prepared, prepare, prepared_dir, preprocess_case
from dgbench.data.io import DataError
from dgbench.registry import DATASETS
from test_datasets import env, make_folder, save, volume  # noqa: F401  (env is a fixture)


# ---------------------------------------------------------------------------------------------
def folder_case(root: Path, i: int) -> tuple[Path, Path]:
    return root / "imagesTr" / f"liver_{i}_0000.nii.gz", root / "labelsTr" / f"liver_{i}.nii.gz"


def prepared_folder(tmp_path, monkeypatch) -> tuple[Path, object]:
    root = tmp_path / "mydata"
    make_folder(root)
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    a = DATASETS.get("folder")()
    prepare(a, root, progress=False)
    return root, a


def test_changed_source_file_is_recached_never_served_stale(tmp_path, env, monkeypatch, caplog):
    root, a = prepared_folder(tmp_path, monkeypatch)
    image, label = folder_case(root, 0)
    old = np.array(Prepared(a).case("liver_0").image)
    img, _ = volume(100, classes=(1, 2), ct=True)                # another valid image, same grid
    save(image, img, (1.0, 1.0, 2.0))
    with pytest.raises(DataError, match=rf"{image}: changed since folder was prepared; .*`dgbench prepare folder"):
        ensure_prepared(a)                                       # training refuses the stale arrays
    caplog.set_level(logging.WARNING, logger="dgbench")
    prepare(a, root, progress=False)
    assert any("re-caching case liver_0" in r.getMessage() and str(image) in r.getMessage() for r in caplog.records)
    new = np.array(Prepared(a).case("liver_0").image)
    case = next(c for c in a.find_cases(root) if c.case_id == "liver_0")
    assert np.array_equal(new, preprocess_case(a, case)[0]) and not np.array_equal(new, old)
    assert ensure_prepared(a).changed_sources() == []
    # the same content under a new mtime is not a change: nothing re-cached
    npy = prepared_dir(a) / "liver_1.img.npy"
    before = npy.stat().st_mtime_ns
    os.utime(folder_case(root, 1)[0], (time.time() + 5, time.time() + 5))
    prepare(a, root, progress=False)
    assert npy.stat().st_mtime_ns == before and ensure_prepared(a).changed_sources() == []
    # a truncated file is re-validated and refused; the old arrays are no longer served
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{image}: cannot be read as NIfTI"):
        prepare(a, root, progress=False)
    with pytest.raises(DataError, match="is not prepared"):
        Prepared(a)
    # a generated dataset re-prepares itself instead of refusing
    save(image, img, (1.0, 1.0, 2.0))
    prepare(a, root, progress=False)
    save(label, np.zeros((16, 16, 16), np.uint8), (1.0, 1.0, 2.0))
    a.generated = True
    assert not np.asarray(ensure_prepared(a).case("liver_0").label).any()


def test_nan_voxels_are_an_error_naming_the_file(tmp_path, env, monkeypatch):
    root = tmp_path / "mydata"
    make_folder(root)
    image, _ = folder_case(root, 2)
    img = np.asarray(nib.load(str(image)).dataobj).astype(np.float32)
    img[4:7, 4:7, 4:7] = np.nan
    save(image, img, (1.0, 1.0, 2.0))
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    with pytest.raises(DataError, match=rf"{image}: 27 voxel\(s\) are NaN or infinite \(first at voxel \(4, 4, 4\)\)"):
        prepare(DATASETS.get("folder")(), root, progress=False)


def test_corrupt_input_is_refused_and_cached_cases_are_kept(tmp_path, env, monkeypatch):
    root = tmp_path / "mydata"
    make_folder(root)
    _, label = folder_case(root, 10)                    # a test case: others are cached before it
    label.write_bytes(label.read_bytes()[:100])         # a 16³ label gzips to ~200 bytes
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    a = DATASETS.get("folder")()
    with pytest.raises(DataError, match=rf"{label}: cannot be read as NIfTI"):
        prepare(a, root, progress=False)
    assert len(list(prepared_dir(a).glob("liver_*.json"))) > 0 and not (prepared_dir(a) / "index.json").exists()


def test_unlisted_images_and_empty_target_domains_are_refused(tmp_path, env, monkeypatch):
    root = tmp_path / "mydata"
    make_folder(root)
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    img, lbl = volume(50, classes=(1, 2))
    save(root / "imagesTr" / "liver_50_0000.nii.gz", img, (1.0, 1.0, 2.0))       # no domains.csv row
    save(root / "labelsTr" / "liver_50.nii.gz", lbl, (1.0, 1.0, 2.0))
    with pytest.raises(DataError, match=r"imagesTr: 1 case\(s\) have files here but no row in .*domains.csv: \['liver_50'\]"):
        prepare(DATASETS.get("folder")(), root, progress=False)
    (root / "imagesTr" / "liver_50_0000.nii.gz").unlink()
    (root / "labelsTr" / "liver_50.nii.gz").unlink()
    cfg = json.loads((root / "dgbench.json").read_text())
    cfg["modality"]["siteD"] = "mr"
    cfg["target"].append("siteD")                                   # named, but no case has it
    (root / "dgbench.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"target domain\(s\) \['siteD'\] have no test cases"):
        prepare(DATASETS.get("folder")(), root, progress=False)
