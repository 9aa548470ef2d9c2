"""Bad inputs give clear errors that name the file and lose nothing."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from dgbench.data import adapter as adapter_mod
from dgbench.data.cache import prepare, prepared_dir
from dgbench.data.io import DataError, load_nifti
from dgbench.registry import DATASETS


def _copy_synth(tmp_path, synth_prepared):
    src = synth_prepared.index["root"]   # the session cache, not this test's own
    dst = tmp_path / "raw"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGBENCH_CACHE", str(tmp_path / "cache"))


def test_corrupt_nifti_names_the_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b this is not a gzip stream")
    with pytest.raises(DataError, match="broken.nii.gz.*corrupt"):
        load_nifti(bad)
    truncated = tmp_path / "trunc.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(DataError, match="trunc.nii"):
        load_nifti(truncated)


def test_four_d_needs_a_channel(tmp_path):
    p = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 4), np.float32), np.eye(4)), str(p))
    with pytest.raises(DataError, match="multi.nii.gz.*channel"):
        load_nifti(p)
    assert load_nifti(p, channel=2)[0].shape == (8, 8, 8)
    with pytest.raises(DataError, match="channel 7 does not exist"):
        load_nifti(p, channel=7)


def _rewrite(path, fn):
    img = nib.load(str(path))
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.mark.parametrize("problem, match", [
    ("shape", "label shape .* differs"),
    ("affine", "label affine differs"),
    ("values", r"label values \[9\] are outside the label map"),
    ("corrupt", "cannot be read as NIfTI"),
])
def test_bad_case_stops_prepare_and_keeps_cache(tmp_path, synth_prepared, own_cache, problem, match):
    raw = _copy_synth(tmp_path, synth_prepared)
    a = DATASETS.get("synth")()
    bad_case = a.split().train[2]         # two cases are cached before it fails
    lbl = raw / "labelsTr" / f"{bad_case}.nii.gz"
    if problem == "shape":
        _rewrite(lbl, lambda d, A: (d[:-2], A))
    elif problem == "affine":
        _rewrite(lbl, lambda d, A: (d, np.diag([3.0, 3.0, 3.0, 1.0])))
    elif problem == "values":
        _rewrite(lbl, lambda d, A: (np.where(d == 4, 9, d).astype(np.uint8), A))
    else:
        lbl.write_bytes(lbl.read_bytes()[:200])
    with pytest.raises(DataError, match=match) as err:
        prepare(a, raw, progress=False)
    assert f"{bad_case}.nii.gz" in str(err.value)
    out = prepared_dir(a)
    cached_before = sorted(p.name for p in out.glob("*.json"))
    assert cached_before == sorted(f"{c}.json" for c in a.split().train[:2])   # nothing lost
    assert not (out / "index.json").exists()                                   # never marked complete


def test_split_naming_a_missing_case(tmp_path, synth_prepared, own_cache):
    raw = _copy_synth(tmp_path, synth_prepared)
    (raw / "imagesTr" / "synth_030_0000.nii.gz").unlink()
    (raw / "labelsTr" / "synth_030.nii.gz").unlink()
    lines = (raw / "domains.csv").read_text().splitlines()
    (raw / "domains.csv").write_text("\n".join(l for l in lines if not l.startswith("synth_030")) + "\n")
    with pytest.raises(DataError, match=r"synth.json: 1 split case\(s\) not found.*synth_030"):
        prepare(DATASETS.get("synth")(), raw, progress=False)


def test_edited_split_file_is_refused(tmp_path, monkeypatch):
    src = adapter_mod.REPO_SPLITS / "synth.json"
    payload = json.loads(src.read_text())
    payload["train"] = payload["train"][:-1]
    (tmp_path / "synth.json").write_text(json.dumps(payload))
    monkeypatch.setenv("DGBENCH_SPLITS", str(tmp_path))
    with pytest.raises(DataError, match="does not match its recorded checksum"):
        DATASETS.get("synth")().split()
