"""The embedded benchmark: deterministic generation, read back through the real adapter path."""
import numpy as np

from dgbench.data import synth
from dgbench.data.io import load_nifti
from dgbench.registry import DATASETS


def test_generator_is_deterministic():
    a, b = synth.make_tissue_map(5), synth.make_tissue_map(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synth.make_tissue_map(6))
    for domain in synth.CONTRASTS:
        i1, l1, s1 = synth.render(a, domain, 5)
        i2, l2, s2 = synth.render(a, domain, 5)
        assert np.array_equal(i1, i2) and np.array_equal(l1, l2) and s1 == s2


def test_every_class_is_present_and_domains_differ():
    t = synth.make_tissue_map(11)
    lbl = synth.labels_from_tissue(t)
    assert set(np.unique(lbl)) == set(synth.CLASSES)
    ct, _, _ = synth.render(t, "ct", 11)
    mri, _, _ = synth.render(t, "mri", 11)
    # partly inverted ordering: the aorta is brighter than the liver on CT, darker on MRI
    assert ct[lbl == 3].mean() > ct[lbl == 1].mean()
    assert mri[lbl == 3].mean() < mri[lbl == 1].mean()
    thick, tl, spacing = synth.render(t, "ct-thick", 11)
    assert thick.shape[2] == t.shape[2] // synth.THICK_FACTOR and spacing[2] == synth.SPACING[2] * 4


def test_adapter_reads_back_exactly_what_was_written(synth_prepared):
    adapter = DATASETS.get("synth")()
    root = adapter.default_root()
    cases = {c.case_id: c for c in adapter.find_cases(root)}
    split = adapter.split()
    assert sorted(cases) == sorted(split.all_cases())
    for case_id, domain in [("synth_003", "ct"), ("synth_026", "mri"), ("synth_045", "ct-thick")]:
        c = cases[case_id]
        assert c.domain == domain
        seed = int(case_id.split("_")[1])
        img, lbl, spacing = synth.render(synth.make_tissue_map(seed), domain, seed)
        got_img, aff, got_spacing = load_nifti(c.image)
        got_lbl, _, _ = load_nifti(c.label)
        assert np.array_equal(np.asarray(got_img), img) and np.array_equal(np.asarray(got_lbl), lbl)
        assert np.allclose(got_spacing, spacing)


def test_prepared_cache_matches_preprocessing(synth_prepared):
    from dgbench.data.cache import preprocess_case
    adapter = DATASETS.get("synth")()
    cases = {c.case_id: c for c in adapter.find_cases(adapter.default_root())}
    for case_id in ("synth_001", "synth_044"):
        img, lbl, meta = preprocess_case(adapter, cases[case_id])
        pc = synth_prepared.case(case_id)
        assert np.array_equal(np.asarray(pc.image), img) and np.array_equal(np.asarray(pc.label), lbl)
        assert pc.image.shape == synth.SHAPE     # thick slices resampled back to the dataset spacing
        assert 0.0 <= float(np.min(pc.image)) and float(np.max(pc.image)) <= 1.0


def test_split_is_fixed_and_disjoint():
    split = DATASETS.get("synth")().split()
    assert len(split.train) == 20 and len(split.val) == 5
    assert {d: len(v) for d, v in split.test.items()} == {"mri": 8, "ct-scanner2": 8, "ct-thick": 8}
    assert set(split.fewshot["5"]) <= set(split.train) and len(split.fewshot["1"]) == 1


def test_generation_waits_for_the_process_that_holds_the_cache_lock(synth_prepared):
    """Two processes that need `synth` on a fresh cache (two benches, two test workers) must
    not generate it into the same folder at once: ensure_prepared takes an flock beside the
    cache. Holding it here, another process's ensure_prepared returns only after the release."""
    import os
    import subprocess
    import sys
    import time

    from dgbench.atomic import exclusive
    from dgbench.data.cache import generation_lock
    lock = generation_lock(DATASETS.get("synth")())
    code = ("import time; from dgbench.data.cache import ensure_prepared; from dgbench.registry import DATASETS; "
            "a = DATASETS.get('synth')(); print('imported', flush=True); ensure_prepared(a); print(time.time())")
    with exclusive(lock) as held:
        assert held
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        assert proc.stdout.readline().strip() == "imported"
        time.sleep(2)                   # the prepared cache is checked in well under this, unlocked
        released = time.time()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and float(out) >= released
