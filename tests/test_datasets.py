"""The six real datasets and the `folder` adapter, on tiny fake copies of each layout as distributed
(junk files, gapped ids, 4-D BraTS, label quirks), plus the committed split files."""
import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dgbench.data import adapter as adapter_mod
from dgbench.data.adapter import Case, content_sha1, write_split
from dgbench.data.cache import Prepared, normalise, prepare, preprocess_case, summary
from dgbench.data.io import DataError
from dgbench.registry import DATASETS

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path, monkeypatch):
    """Own cache and own split folder (a copy of the committed one) for the test."""
    splits = tmp_path / "splits"
    shutil.copytree(adapter_mod.REPO_SPLITS, splits)
    monkeypatch.setenv("DGBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DGBENCH_SPLITS", str(splits))
    monkeypatch.delenv("DGBENCH_FOLDER_ROOT", raising=False)
    monkeypatch.delenv("DGBENCH_HVSMR_VARIANT", raising=False)
    return splits


def save(path: Path, data, spacing=(1.0, 1.0, 1.0), affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*spacing, 1.0]) if affine is None else affine), str(path))


def volume(seed, shape=(16, 16, 16), classes=(1, 2, 3), ct=False):
    """A blob label map and an image that depends on it (CT in HU or MR in arbitrary units)."""
    rng = np.random.default_rng(seed)
    lbl = np.zeros(shape, np.uint8)
    for i, c in enumerate(classes):
        lo = [int(rng.integers(0, max(1, n - 5))) for n in shape]
        lbl[tuple(slice(a, min(n, a + 4 + i)) for a, n in zip(lo, shape))] = c
    base = -1000 if ct else 0
    img = (base + 200.0 * lbl + rng.normal(0, 30, shape)).astype(np.int16)
    return img, lbl


def junk(folder: Path):
    """What archives and file browsers leave behind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "._junk.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / ".DS_Store").write_bytes(b"Bud1")
    mac = folder.parent / "__MACOSX" / folder.name
    mac.mkdir(parents=True, exist_ok=True)
    (mac / "._junk.nii.gz").write_bytes(b"junk")


def rule_copy(splits: Path, name: str, **changes):
    """A test version of a committed rule file (e.g. release counts of the fake copy)."""
    payload = json.loads((splits / f"{name}.rule.json").read_text())
    payload.update(changes)
    payload.pop("sha1")
    payload["sha1"] = content_sha1(payload)
    (splits / f"{name}.rule.json").write_text(json.dumps(payload))


def small_split(splits: Path, name: str, train, val, test, target_val=None, fewshot=None):
    write_split(splits / f"{name}.json", {"dataset": name, "rule": "test split", "train": train, "val": val,
                                          "test": test, "target_val": target_val or {}, "fewshot": fewshot or {}})


def assert_cache_matches(adapter, root, case_ids):
    """The prepared cache holds exactly what preprocess_case gives."""
    cases = {c.case_id: c for c in adapter.find_cases(root)}
    prep = Prepared(adapter)
    for cid in case_ids:
        img, lbl, meta = preprocess_case(adapter, cases[cid])
        pc = prep.case(cid)
        assert np.array_equal(np.asarray(pc.image), img) and np.array_equal(np.asarray(pc.label), lbl), cid
        assert pc.domain == cases[cid].domain
    return prep


# ---------------------------------------------------------------------------------------------
# committed splits
# ---------------------------------------------------------------------------------------------
BRATS_TV = ("001 004 018 028 059 072 093 113 119 150 156 165 169 175 184 204 207 225 228 230 231 260 276 282 287 "
            "289 293 294 312 314 324 325 349 350 364 367 371 378 385 411 422 423 444 449 465 467 469 475").split()
BRATS_TEST = ("006 007 008 023 025 027 033 034 041 045 060 062 065 067 069 071 074 079 083 090 094 099 106 122 126 "
              "134 136 137 140 145 148 151 153 154 159 180 188 191 192 202 215 217 220 222 223 226 227 229 232 233 "
              "234 244 254 255 256 263 267 269 270 277 284 286 290 292 299 302 303 304 317 318 332 333 339 345 346 "
              "351 356 357 361 365 375 381 384 393 401 409 415 427 434 446 452 457 462 468 472 481").split()
HVSMR_TV = "pat3 pat16 pat21 pat22 pat28 pat31 pat32 pat33 pat35 pat36 pat39 pat42 pat44 pat45 pat47 pat55 pat56 pat58"
HVSMR_TEST = ("pat4 pat9 pat20 pat30 pat34 pat37 pat38 pat40 pat41 pat43 pat46 pat49 pat50 pat51 pat52 pat53 pat54 "
              "pat57 pat59")
HVSMR_ORDER = ("pat5 pat11 pat13 pat1 pat17 pat27 pat15 pat23 pat10 pat6 pat18 pat48 pat8 pat29 pat0 pat7 pat19 "
               "pat24 pat2 pat14 pat26 pat12 pat25").split()


def test_committed_splits_are_the_rules_output():
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "splits" / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "splits/ differ from the rules: run python splits/regenerate.py"


def test_brats_split_sizes_and_reference_lists():
    sp = DATASETS.get("brats")().split()
    subj = lambda ids: {c.split("_")[1] for c in ids}
    assert len(subj(sp.train)) + len(subj(sp.val)) == 340 and len(subj(sp.val)) == 34
    assert len(sp.train) == 3 * 306 and len(sp.val) == 3 * 34                   # T2, T1w, T1gd per subject
    assert {c.rsplit("_", 1)[1] for c in sp.train + sp.val} == {"t1", "t1gd", "t2"}
    assert sorted(subj(sp.target_val["flair"])) == BRATS_TV and sorted(subj(sp.test["flair"])) == BRATS_TEST
    assert not (subj(sp.train) | subj(sp.val)) & (subj(sp.target_val["flair"]) | subj(sp.test["flair"]))
    assert not subj(sp.train) & subj(sp.val)                                      # hold-out by whole subject
    for n in (1, 3, 5):
        shots = sp.train_cases(n)
        assert len(shots) == 3 * n and len(subj(shots)) == n                      # N counts subjects
    assert sp.train_cases(3)[:9] == sp.train_cases(5)[:9]                         # frozen prefixes


def test_hvsmr_split_sizes_and_reference_lists():
    sp = DATASETS.get("hvsmr")().split()
    assert len(sp.train) + len(sp.val) == 23 and len(sp.val) == 3
    assert " ".join(sp.target_val["severe"]) == HVSMR_TV and " ".join(sp.test["severe"]) == HVSMR_TEST
    assert sp.val == sorted(HVSMR_ORDER[-3:], key=lambda s: int(s[3:]))          # hold-out = end of the order
    assert sp.train_cases(5) == HVSMR_ORDER[:5]                                  # the reference's few-shot order


def test_prostate_split_sizes():
    sp = DATASETS.get("prostate")().split()
    assert len(sp.train) + len(sp.val) == 49 and len(sp.val) == 5
    assert {d: len(v) for d, v in sp.target_val.items()} == {"UCL": 13, "HK": 12}
    assert {d: len(v) for d, v in sp.test.items()} == {"BIDMC": 12, "BMC": 30}
    assert {c.split("_")[0] for c in sp.train + sp.val} == {"RUNMC", "I2CVB"}
    assert "BIDMC_Case02" not in sp.test["BIDMC"] and "UCL_Case01" in sp.target_val["UCL"]


def _fake_cases(ids_domains):
    return [Case(c, d, Path(f"/nowhere/images/{c}.nii.gz"), Path(f"/nowhere/labels/{c}.nii.gz"))
            for c, d in ids_domains]


def test_rule_splits_on_release_sized_id_lists(env):
    amos = DATASETS.get("amos")()
    ct_ids = sorted(set(np.random.default_rng(0).choice(np.arange(1, 500), 300, replace=False)))
    mri_ids = list(range(507, 567))
    cases = _fake_cases([(f"amos_{i:04d}", "ct") for i in ct_ids] + [(f"amos_{i:04d}", "mri") for i in mri_ids])
    p = amos.derive_split(cases, amos.split_rule())
    assert (len(p["train"]), len(p["val"]), len(p["target_val"]["mri"]), len(p["test"]["mri"])) == (270, 30, 30, 30)
    assert p == amos.derive_split(list(reversed(cases)), amos.split_rule())      # order of discovery irrelevant
    assert set(p["fewshot"]["5"]) <= set(p["train"]) and p["fewshot"]["5"][:3] == p["fewshot"]["3"]
    with pytest.raises(DataError, match="ct: 299 labelled cases found, the release has 300"):
        amos.derive_split(cases[1:], amos.split_rule())

    topcow = DATASETS.get("topcow")()
    subjects = [*range(1, 91), *range(131, 166)]          # the numbering a third-party script reads
    cases = _fake_cases([(f"topcow_{m}_{s:03d}", d) for s in subjects for m, d in (("ct", "cta"), ("mr", "mra"))])
    p = topcow.derive_split(cases, topcow.split_rule())
    assert (len(p["train"]), len(p["val"]), len(p["target_val"]["mra"]), len(p["test"]["mra"])) == (67, 8, 20, 30)
    num = lambda ids: {c.rsplit("_", 1)[1] for c in ids}
    assert not (num(p["train"]) | num(p["val"])) & (num(p["target_val"]["mra"]) | num(p["test"]["mra"]))


def test_rule_datasets_plan_without_data_then_realise(env):
    from dgbench.spec import resolve
    sp = DATASETS.get("amos")().split()
    assert sp.provisional and sp.train == [] and set(sp.fewshot) == {"1", "3", "5"}
    assert resolve("amos", "erm").split_sha == sp.sha1                          # sweeps resolve without data


# ---------------------------------------------------------------------------------------------
# AMOS
# ---------------------------------------------------------------------------------------------
AMOS_IDS = {"Tr": [1, 5, 507, 510], "Va": [8, 12, 540, 541]}


def make_amos(root: Path, ids=AMOS_IDS):
    base = root / "amos22"
    for part, nums in ids.items():
        for n in nums:
            img, lbl = volume(n, classes=(1, 6, 14) if n < 500 else (1, 6), ct=n < 500)
            affine = np.diag([-1.0, -1.0, 1.5, 1.0]) if n == 507 else None      # LPS: reoriented on load
            save(base / f"images{part}" / f"amos_{n:04d}.nii.gz", img, (1, 1, 1.5), affine)
            save(base / f"labels{part}" / f"amos_{n:04d}.nii.gz", lbl, (1, 1, 1.5), affine)
        junk(base / f"images{part}")
    save(base / "imagesTs" / "amos_0100.nii.gz", volume(100)[0], (1, 1, 1.5))
    (base / "dataset.json").write_text("{}")
    return base


def test_amos_domains_realised_split_and_cache(tmp_path, env):
    base = make_amos(tmp_path / "raw")
    rule_copy(env, "amos", expected={"ct": 4, "mri": 4})
    a = DATASETS.get("amos")()
    cases = a.find_cases(tmp_path / "raw")                       # the zip's top folder is found
    assert [c.case_id for c in cases] == ["amos_0001", "amos_0005", "amos_0008", "amos_0012",
                                          "amos_0507", "amos_0510", "amos_0540", "amos_0541"]
    assert {c.case_id: c.domain for c in cases}["amos_0507"] == "mri"
    assert all(c.domain == "ct" for c in cases[:4])
    index = prepare(a, tmp_path / "raw", progress=False)
    sp = a.split()
    assert not sp.provisional and sp.path == tmp_path / "cache" / "splits" / "amos.json"
    assert sorted(sp.all_cases()) == sorted(c.case_id for c in cases) and index["split_sha1"] == sp.sha1
    assert len(sp.target_val["mri"]) == 2 and len(sp.test["mri"]) == 2 and len(sp.val) == 2
    prep = assert_cache_matches(a, base, ["amos_0001", "amos_0507"])
    raw = np.asarray(nib.load(str(base / "imagesTr" / "amos_0001.nii.gz")).dataobj, np.float32)
    assert np.allclose(prep.case("amos_0001").image, np.clip((raw + 1024) / 2048, 0, 1))   # CT window
    text = summary(a, index)
    assert "mri: classes absent from every case: 2 right kidney" in text and "imagesTs: 1 unlabelled" in text
    assert prepare(a, base, progress=False)["split_sha1"] == sp.sha1          # same files, same split
    # the same number of cases but another id: the realised split is not silently replaced
    for part in ("images", "labels"):
        (base / f"{part}Va" / "amos_0012.nii.gz").rename(base / f"{part}Va" / "amos_0013.nii.gz")
    with pytest.raises(DataError, match=r"amos.json: the files found give a different amos split.*amos_0013"):
        prepare(a, base, progress=False)
    (base / "imagesVa" / "amos_0013.nii.gz").unlink()
    (base / "labelsVa" / "amos_0013.nii.gz").unlink()
    with pytest.raises(DataError, match="ct: 3 labelled cases found, the release has 4"):
        prepare(a, base, progress=False)


@pytest.mark.parametrize("problem, match", [
    ("values", r"amos_0005.nii.gz: label values \[16\] are outside"),
    ("shape", r"labelsTr/amos_0005.nii.gz: label shape"),
    ("corrupt", r"imagesTr/amos_0005.nii.gz: cannot be read as NIfTI"),
    ("foreign", r"imagesTr/scan_final.nii.gz: not an AMOS file name"),
    ("no label", r"imagesTr/amos_0005.nii.gz: no label file for this image"),
    ("duplicate", r"imagesVa/amos_0005.nii.gz: case amos_0005 is also in"),
])
def test_amos_bad_inputs_name_the_file(tmp_path, env, problem, match):
    base = make_amos(tmp_path / "raw", {"Tr": [1, 5, 507], "Va": [8]})
    rule_copy(env, "amos", expected=None)
    img, lbl = base / "imagesTr" / "amos_0005.nii.gz", base / "labelsTr" / "amos_0005.nii.gz"
    if problem == "values":
        save(lbl, np.full((16, 16, 16), 16, np.uint8), (1, 1, 1.5))
    elif problem == "shape":
        save(lbl, np.zeros((16, 16, 12), np.uint8), (1, 1, 1.5))
    elif problem == "corrupt":
        img.write_bytes(img.read_bytes()[:100])
    elif problem == "foreign":
        shutil.copy(img, base / "imagesTr" / "scan_final.nii.gz")
    elif problem == "no label":
        lbl.unlink()
    else:
        shutil.copy(img, base / "imagesVa" / img.name)
        shutil.copy(lbl, base / "labelsVa" / lbl.name)
    with pytest.raises(DataError, match=match):
        prepare(DATASETS.get("amos")(), base, progress=False)


# ---------------------------------------------------------------------------------------------
# BraTS (4-D images, channel by name)
# ---------------------------------------------------------------------------------------------
def make_brats(root: Path, subjects=(1, 2, 3, 5, 10), order=("T2w", "FLAIR", "t1gd", "T1w")):
    base = root / "Task01_BrainTumour"
    base.mkdir(parents=True)
    (base / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "tensorImageSize": "4D", "modality": {str(i): n for i, n in enumerate(order)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}))
    for s in subjects:
        _, lbl = volume(s)
        img = np.stack([lbl * (10 * (c + 1)) + c for c in range(4)], axis=-1).astype(np.float32)
        img += np.random.default_rng(s).normal(0, 1, img.shape).astype(np.float32)
        save(base / "imagesTr" / f"BRATS_{s:03d}.nii.gz", img)
        save(base / "labelsTr" / f"BRATS_{s:03d}.nii.gz", lbl)
    for folder in ("imagesTr", "labelsTr"):
        junk(base / folder)
        (base / folder / "_BRATS_999.nii.gz").write_bytes(b"MSD tar junk")
        (base / folder / "._BRATS_001.nii.gz").write_bytes(b"AppleDouble")
    save(base / "imagesTs" / "BRATS_485.nii.gz", np.zeros((16, 16, 16, 4), np.float32))
    return base


def brats_split(splits):
    cid = lambda s, doms: [f"BRATS_{s:03d}_{d}" for d in doms]
    small_split(splits, "brats", cid(1, ("t2", "t1", "t1gd")) + cid(2, ("t2", "t1", "t1gd")),
                cid(3, ("t2", "t1", "t1gd")), {"flair": cid(10, ("flair",))}, {"flair": cid(5, ("flair",))},
                {"1": cid(2, ("t2", "t1", "t1gd"))})


def test_brats_channels_by_name_one_case_per_channel(tmp_path, env):
    order = ("T2w", "FLAIR", "t1gd", "T1w")                      # not the usual order: found by name
    base = make_brats(tmp_path / "raw", order=order)
    brats_split(env)
    a = DATASETS.get("brats")()
    cases = {c.case_id: c for c in a.find_cases(tmp_path / "raw")}
    assert len(cases) == 5 * 4 and cases["BRATS_002_t1"].channel == order.index("T1w")
    assert cases["BRATS_010_flair"].domain == "flair" and cases["BRATS_010_flair"].channel == 1
    index = prepare(a, tmp_path / "raw", progress=False)
    assert len(index["cases"]) == 11 and "imagesTs: 1 unlabelled" in summary(a, index)
    prep = assert_cache_matches(a, base, ["BRATS_002_t1", "BRATS_005_flair"])
    raw = nib.load(str(base / "imagesTr" / "BRATS_002.nii.gz")).get_fdata(dtype=np.float32)[..., order.index("T1w")]
    assert np.allclose(np.asarray(prep.case("BRATS_002_t1").image), normalise(raw, "mr"))
    assert a.split().train_cases(1) == ["BRATS_002_t2", "BRATS_002_t1", "BRATS_002_t1gd"]


def test_brats_bad_inputs(tmp_path, env):
    base = make_brats(tmp_path / "raw", subjects=(1, 2, 3, 5, 10))
    brats_split(env)
    save(base / "imagesTr" / "BRATS_003.nii.gz", volume(3)[0])                 # 3-D where 4-D is expected
    with pytest.raises(DataError, match=r"BRATS_003.nii.gz: expected a 4-D multi-channel image"):
        prepare(DATASETS.get("brats")(), base, progress=False)
    meta = json.loads((base / "dataset.json").read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w", "2": "T2w"}
    (base / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset.json: no channel named like 't1gd'"):
        DATASETS.get("brats")().find_cases(base)
    (base / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"dataset.json: not found"):
        DATASETS.get("brats")().find_cases(base)


# ---------------------------------------------------------------------------------------------
# TopCoW (label 15 -> 13, 2024 and 2023 naming)
# ---------------------------------------------------------------------------------------------
def make_topcow(root: Path, subjects=(1, 2, 3, 4, 131, 132), release=2024):
    base = root / "TopCoW2024_Data_Release"
    lbl_dir = base / ("cow_seg_labelsTr" if release == 2024 else "mul_labelsTr")
    for s in subjects:
        for mod in ("ct", "mr"):
            img, lbl = volume(s, classes=(1, 4, 15), ct=mod == "ct")
            name = f"topcow_{mod}_{s:03d}" if release == 2024 else f"topcow_{mod}_whole_{s:03d}"
            save(base / "imagesTr" / f"{name}_0000.nii.gz", img, (0.3, 0.3, 0.6))
            save(lbl_dir / f"{name}.nii.gz", lbl, (0.3, 0.3, 0.6))
            if release == 2024:
                (base / "roi_loc_labelsTr").mkdir(parents=True, exist_ok=True)
                (base / "roi_loc_labelsTr" / f"{name}.txt").write_text("Size (Voxels): 8 8 8\n")
            else:
                save(base / "imagesTr" / f"topcow_{mod}_roi_{s:03d}_0000.nii.gz", img[:8], (0.3, 0.3, 0.6))
    junk(base / "imagesTr")
    junk(lbl_dir)
    return base


def test_topcow_remap_and_realised_split(tmp_path, env):
    base = make_topcow(tmp_path / "raw")
    rule_copy(env, "topcow", cut={"train": 3, "target_val": 1}, expected={"cta": 6, "mra": 6})
    a = DATASETS.get("topcow")()
    cases = a.find_cases(tmp_path / "raw")
    assert [c.case_id for c in cases][:3] == ["topcow_ct_001", "topcow_ct_002", "topcow_ct_003"]
    assert [c.case_id for c in cases][4:6] == ["topcow_ct_131", "topcow_ct_132"]       # numeric order
    index = prepare(a, tmp_path / "raw", progress=False)
    sp = a.split()
    assert len(sp.train) + len(sp.val) == 3 and len(sp.target_val["mra"]) == 1 and len(sp.test["mra"]) == 2
    assert all(c.startswith("topcow_ct_") for c in sp.train + sp.val)
    num = lambda ids: {c[-3:] for c in ids}
    assert not num(sp.train + sp.val) & num(sp.target_val["mra"] + sp.test["mra"])   # no patient in both
    prep = assert_cache_matches(a, base, sp.train[:1] + sp.test["mra"][:1])
    for cid in index["cases"]:
        lbl = np.asarray(prep.case(cid).label)
        assert lbl.max() == 13 and not np.any(lbl == 15)                         # 3rd-A2 15 -> 13


def test_topcow_2023_naming_and_mixed_releases(tmp_path, env):
    make_topcow(tmp_path / "r23", subjects=(1, 7), release=2023)
    a = DATASETS.get("topcow")()
    ids = [c.case_id for c in a.find_cases(tmp_path / "r23")]
    assert ids == ["topcow_ct_001", "topcow_ct_007", "topcow_mr_001", "topcow_mr_007"]   # roi crops skipped
    base = make_topcow(tmp_path / "mixed", subjects=(1,))
    shutil.copy(base / "imagesTr" / "topcow_ct_001_0000.nii.gz", base / "imagesTr" / "topcow_ct_whole_002_0000.nii.gz")
    shutil.copy(base / "cow_seg_labelsTr" / "topcow_ct_001.nii.gz", base / "cow_seg_labelsTr" / "topcow_ct_whole_002.nii.gz")
    with pytest.raises(DataError, match="both TopCoW 2023"):
        a.find_cases(tmp_path / "mixed")
    gap = make_topcow(tmp_path / "gap", subjects=(1,))
    (gap / "cow_seg_labelsTr" / "topcow_mr_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"topcow_mr_001_0000.nii.gz: no label topcow_mr_001.nii.gz"):
        a.find_cases(tmp_path / "gap")


# ---------------------------------------------------------------------------------------------
# HVSMR (all 60 committed subjects, nested cropped/cropped, clinical CSV)
# ---------------------------------------------------------------------------------------------
def make_hvsmr(root: Path, csv_rows=None):
    from dgbench_datasets.hvsmr import MILD, MODERATE
    sp = (0.77, 0.72, 0.72)
    for i in range(60):
        img, lbl = volume(i, shape=(8, 8, 8), classes=(1, 3, 8) if i % 2 else (1, 2))   # RV empty in some
        d = root / "cropped" / "cropped"
        save(d / f"pat{i}_cropped.nii.gz", img, sp)
        save(d / f"pat{i}_cropped_seg.nii.gz", lbl, sp)
        if i < 3:
            save(d / f"pat{i}_cropped_seg_endpoints.nii.gz", lbl, sp)
            save(root / "orig" / f"pat{i}_orig.nii.gz", img, sp)
            save(root / "orig" / f"pat{i}_orig_seg.nii.gz", lbl, sp)
            save(root / "cropped_norm" / f"pat{i}_cropped_norm.nii.gz", img, sp)
            save(root / "cropped_norm" / f"pat{i}_cropped_seg.nii.gz", lbl, sp)
    junk(root / "cropped" / "cropped")
    if csv_rows is None:
        cat = {**{p: "Mild" for p in MILD}, **{p: "Moderate" for p in MODERATE}}
        csv_rows = [(i, cat.get(f"pat{i}", "Severe")) for i in range(60)]
    if csv_rows:
        (root / "hvsmr_clinical.csv").write_text("Pat,Age,Category\n" + "".join(f"{p},{3 + p % 9},{c}\n"
                                                                               for p, c in csv_rows))


def test_hvsmr_committed_split_on_the_real_layout(tmp_path, env):
    make_hvsmr(tmp_path / "raw")
    a = DATASETS.get("hvsmr")()
    cases = {c.case_id: c for c in a.find_cases(tmp_path / "raw")}
    assert list(cases)[:4] == ["pat0", "pat1", "pat2", "pat3"] and len(cases) == 60
    assert cases["pat1"].domain == "mild" and cases["pat14"].domain == "moderate"
    assert cases["pat16"].domain == "severe" and cases["pat1"].image.parent.name == "cropped"
    index = prepare(a, tmp_path / "raw", progress=False, workers=1)
    assert len(index["cases"]) == 60
    by_dom = {}
    for c in index["cases"].values():
        by_dom[c["domain"]] = by_dom.get(c["domain"], 0) + 1
    assert by_dom == {"mild": 12, "moderate": 11, "severe": 37}
    assert_cache_matches(a, tmp_path / "raw", ["pat5", "pat30"])


def test_hvsmr_severity_without_or_against_the_csv(tmp_path, env, monkeypatch):
    make_hvsmr(tmp_path / "nocsv", csv_rows=[])
    a = DATASETS.get("hvsmr")()
    cases = {c.case_id: c for c in a.find_cases(tmp_path / "nocsv")}
    assert cases["pat48"].domain == "moderate" and cases["pat3"].domain == "severe"
    assert any("hvsmr_clinical.csv not found" in n for n in a.notes)
    monkeypatch.setenv("DGBENCH_HVSMR_VARIANT", "orig")
    orig = DATASETS.get("hvsmr")()
    cases = orig.find_cases(tmp_path / "nocsv")
    assert [c.label.name for c in cases] == ["pat0_orig_seg.nii.gz", "pat1_orig_seg.nii.gz", "pat2_orig_seg.nii.gz"]
    from dgbench.data.cache import prepared_dir
    assert prepared_dir(orig) != prepared_dir(a)                                 # its own cache
    monkeypatch.delenv("DGBENCH_HVSMR_VARIANT")
    make_hvsmr(tmp_path / "bad", csv_rows=[(i, "Severe" if i == 7 else ("Mild" if i in (0, 1) else "Severe"))
                                           for i in range(60)])
    with pytest.raises(DataError, match=r"hvsmr_clinical.csv: mild \+ moderate patients .* disagree"):
        a.find_cases(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------
# Prostate (site folders, ISBI = RUNMC, ISBI_1.5 = BMC, labels > 0 -> 1)
# ---------------------------------------------------------------------------------------------
def make_prostate(root: Path):
    from dgbench_datasets.prostate import RELEASE, SITE_FOLDERS
    folder_of = {v: k for k, v in SITE_FOLDERS.items()}
    for site, nums in RELEASE.items():
        for n in nums:
            img, lbl = volume(n, shape=(8, 8, 8), classes=(1, 2) if site in ("RUNMC", "BMC") else (1,))
            d = root / "Processed" / folder_of[site]
            save(d / f"Case{n:02d}.nii.gz", img, (0.51, 0.52, 0.125))
            save(d / f"Case{n:02d}_segmentation.nii.gz", lbl, (0.51, 0.52, 0.125))
        junk(root / "Processed" / folder_of[site])


def test_prostate_sites_and_binarised_labels(tmp_path, env):
    make_prostate(tmp_path / "raw")
    committed = DATASETS.get("prostate")().split()
    a = DATASETS.get("prostate")()
    cases = {c.case_id: c for c in a.find_cases(tmp_path / "raw")}
    assert sorted(cases) == sorted(committed.all_cases())                       # exactly the committed ids
    assert cases["RUNMC_Case00"].image.parent.name == "ISBI" and cases["BMC_Case29"].image.parent.name == "ISBI_1.5"
    small_split(env, "prostate", ["RUNMC_Case03", "I2CVB_Case18"], ["RUNMC_Case10"], {"BMC": ["BMC_Case04"]},
                {"HK": ["HK_Case38"]})
    prepare(a, tmp_path / "raw", progress=False)
    prep = assert_cache_matches(a, tmp_path / "raw", ["RUNMC_Case03", "BMC_Case04"])
    raw = np.asarray(nib.load(str(cases["RUNMC_Case03"].label)).dataobj)
    assert raw.max() == 2 and np.asarray(prep.case("RUNMC_Case03").label).max() == 1   # {0,1,2} -> {0,1}
    (cases["HK_Case40"].label).unlink()
    with pytest.raises(DataError, match=r"HK/Case40.nii.gz: no Case40_segmentation"):
        a.find_cases(tmp_path / "raw")


# ---------------------------------------------------------------------------------------------
# PanDG (reference layout, per-site nnU-Net layout)
# ---------------------------------------------------------------------------------------------
def make_pandg_reference(root: Path):
    for part, nums in (("train", (1, 2, 3, 4, 11)), ("val", (21, 22)), ("test", (31, 32, 33))):
        for n in nums:
            img, lbl = volume(n, classes=(1,))
            save(root / "PancreasDG" / part / "images" / f"pan_{n:03d}_0000.nii.gz", img, (1.09, 1.09, 4.4))
            save(root / "PancreasDG" / part / "labels" / f"pan_{n:03d}_seg.nii.gz", lbl, (1.09, 1.09, 4.4))
        junk(root / "PancreasDG" / part / "images")


def test_pandg_reference_layout(tmp_path, env):
    make_pandg_reference(tmp_path / "raw")
    a = DATASETS.get("pandg")()
    index = prepare(a, tmp_path / "raw", progress=False)
    sp = a.split()
    assert sorted(sp.train + sp.val) == ["pan_001", "pan_002", "pan_003", "pan_004", "pan_011"] and len(sp.val) == 2
    assert sp.target_val == {"out-of-phase": ["pan_021", "pan_022"]}
    assert sp.test == {"out-of-phase": ["pan_031", "pan_032", "pan_033"]}
    assert index["cases"]["pan_021"]["domain"] == "out-of-phase"
    assert_cache_matches(a, tmp_path / "raw", ["pan_011", "pan_033"])
    (tmp_path / "raw" / "PancreasDG" / "val" / "labels" / "pan_022_seg.nii.gz").unlink()
    with pytest.raises(DataError, match=r"val/images/pan_022_0000.nii.gz: no label file"):
        a.find_cases(tmp_path / "raw")


def test_pandg_per_site_layout(tmp_path, env):
    top = tmp_path / "raw" / "Task310_PancreasT1DG" / "out_of_domain"
    for site, nums in (("EMC", (1, 2, 3)), ("NU", (1, 5)), ("OutPhaseEMC", (1, 2)), ("OutPhaseNU", (7, 8))):
        for n in nums:
            img, lbl = volume(n, classes=(1,))
            save(top / site / "imagesTr" / f"case{n}_0000.nii.gz", img, (1.09, 1.09, 4.4))
            save(top / site / "labelsTr" / f"case{n}.nii.gz", lbl, (1.09, 1.09, 4.4))
    a = DATASETS.get("pandg")()
    cases = {c.case_id: c.domain for c in a.find_cases(tmp_path / "raw")}
    assert cases == {"EMC_case1": "venous", "EMC_case2": "venous", "EMC_case3": "venous", "NU_case1": "venous",
                     "NU_case5": "venous", "OutPhaseEMC_case1": "out-of-phase", "OutPhaseEMC_case2": "out-of-phase",
                     "OutPhaseNU_case7": "out-of-phase", "OutPhaseNU_case8": "out-of-phase"}
    prepare(a, tmp_path / "raw", progress=False)
    sp = a.split()
    assert len(sp.train) == 3 and len(sp.val) == 2
    assert len(sp.target_val["out-of-phase"]) == 2 and len(sp.test["out-of-phase"]) == 2
    make_pandg_reference(tmp_path / "raw")
    with pytest.raises(DataError, match="both the reference layout"):
        a.find_cases(tmp_path / "raw")


# ---------------------------------------------------------------------------------------------
# folder: the user's own data
# ---------------------------------------------------------------------------------------------
def make_folder(root: Path, split_column=False):
    rows = []
    for i, dom in enumerate(["siteA"] * 6 + ["siteB"] * 3 + ["siteC"] * 2):
        img, lbl = volume(i, classes=(1, 2), ct=dom == "siteA")
        save(root / "imagesTr" / f"liver_{i}_0000.nii.gz", img, (1.0, 1.0, 2.0))
        save(root / "labelsTr" / f"liver_{i}.nii.gz", lbl, (1.0, 1.0, 2.0))
        role = ("train" if i < 4 else "val") if dom == "siteA" else ("target_val" if i in (6, 9) else "test")
        rows.append(f"liver_{i},{dom}" + (f",{role}" if split_column else ""))
    junk(root / "imagesTr")
    (root / "domains.csv").write_text("case,domain" + (",split" if split_column else "") + "\n" + "\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2},
                                                   "file_ending": ".nii.gz"}))
    (root / "dgbench.json").write_text(json.dumps({
        "name": "liver-3-sites", "modality": {"siteA": "ct", "siteB": "mr", "siteC": "mr"},
        "source": ["siteA"], "target": ["siteB", "siteC"], "spacing": [1.0, 1.0, 2.0],
        "target_val_fraction": 0.34,
        "train": {"patch_size": [16, 16, 16], "steps": 100, "backbone_kwargs": {"width": 4, "levels": 2}}}))


def test_folder_prepare_once_then_found_again(tmp_path, env, capsys, monkeypatch):
    from dgbench.cli import main
    root = tmp_path / "mydata"
    make_folder(root)
    assert main(["prepare", "folder", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "prepared 11 cases of folder" in out and "siteB" in out
    a = DATASETS.get("folder")()                         # no argument, no env: the recorded root
    assert a.root == root.resolve() and a.domains == {"siteA": "ct", "siteB": "mr", "siteC": "mr"}
    assert a.classes == {0: "background", 1: "liver", 2: "tumour"} and a.train_defaults["steps"] == 100
    sp = a.split()
    assert len(sp.train) == 3 and len(sp.val) == 3                  # 6 source cases: half held out (>= 3)
    assert {d: len(v) for d, v in sp.target_val.items()} == {"siteB": 1}
    assert {d: len(v) for d, v in sp.test.items()} == {"siteB": 2, "siteC": 2}
    assert sp.train_cases(1)[0] in sp.train
    assert_cache_matches(a, root, ["liver_0", "liver_9"])
    from dgbench.spec import resolve
    assert resolve("folder", "erm").train.patch_size == (16, 16, 16)
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="differs from DGBENCH_FOLDER_ROOT"):
        prepare(DATASETS.get("folder")(), root, progress=False)


def test_folder_split_column_and_bad_config(tmp_path, env, monkeypatch):
    root = tmp_path / "mydata"
    make_folder(root, split_column=True)
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    a = DATASETS.get("folder")()
    prepare(a, root, progress=False)
    sp = a.split()
    assert sp.train == ["liver_0", "liver_1", "liver_2", "liver_3"] and sp.val == ["liver_4", "liver_5"]
    assert sp.target_val == {"siteB": ["liver_6"], "siteC": ["liver_9"]}
    cfg = json.loads((root / "dgbench.json").read_text())
    (root / "dgbench.json").write_text(json.dumps({**cfg, "modality": {**cfg["modality"], "siteC": "pet"}}))
    with pytest.raises(DataError, match=r"dgbench.json: modality \{'siteC': 'pet'\} unknown"):
        DATASETS.get("folder")().split()
    (root / "dgbench.json").write_text(json.dumps({**cfg, "target": ["siteA"]}))
    with pytest.raises(DataError, match="disjoint"):
        DATASETS.get("folder")().split()


def test_every_dataset_is_listed_without_data(env, capsys):
    from dgbench.cli import main
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("amos", "brats", "topcow", "hvsmr", "pandg", "prostate", "folder", "synth"):
        assert f"\n{name}: " in "\n" + out
    for name in ("amos", "brats", "topcow", "hvsmr", "pandg", "prostate"):
        a = DATASETS.get(name)()
        assert a.download and a.licence and a.train_defaults["steps"] == 250_000
        assert a.train_defaults["backbone_kwargs"] == {"width": 20, "levels": 5}
        assert all(p % 32 == 0 for p in a.train_defaults["patch_size"])
        assert set(a.source_domains) | set(a.target_domains) == set(a.domains)
    assert DATASETS.get("amos")().sided and DATASETS.get("topcow")().sided and not DATASETS.get("brats")().sided
