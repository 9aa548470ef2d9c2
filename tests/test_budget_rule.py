"""The embedded-budget rule of benchmarks/loss_curves.py, on hand-made loss curves."""
import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "loss_curves", Path(__file__).resolve().parent.parent / "benchmarks" / "loss_curves.py")
lc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lc)


def test_plateau_step_is_where_ninety_percent_of_the_drop_is_made():
    t = np.arange(1, 3001)
    loss = 0.3 + 1.2 * np.exp(-t / 200)
    p = lc.plateau(loss)
    assert p["left_start"] and abs(p["end"] - 0.3) < 1e-3
    # L_start = mean of the first 150 steps = 0.3 + 1.2 * 200/150 (1 - e^-0.75) ~ 1.142, so the
    # threshold 0.3 + 0.1 * 0.842 is crossed at t = 200 ln(1.2 / 0.0842) ~ 531
    assert abs(p["start"] - 1.142) < 1e-3
    assert 520 <= p["plateau_step"] <= 545


def test_a_curve_that_never_leaves_its_start_has_no_plateau():
    rng = np.random.default_rng(0)
    loss = 1.5 - 0.1 * np.linspace(0, 1, 3000) + 0.05 * rng.standard_normal(3000)
    p = lc.plateau(loss)
    assert not p["left_start"] and p["plateau_step"] is None


def test_budget_is_the_slowest_plateau_rounded_up():
    fast = lc.plateau(0.3 + 1.2 * np.exp(-np.arange(1, 3001) / 100))
    slow = lc.plateau(0.3 + 1.2 * np.exp(-np.arange(1, 3001) / 500))
    flat = lc.plateau(np.full(3000, 1.5))
    b = lc.budget({"fast": fast, "slow": slow, "flat": flat})
    assert b % 100 == 0 and slow["plateau_step"] <= b < slow["plateau_step"] + 100
    assert lc.budget({"flat": flat}) is None


def test_smoothing_keeps_a_constant_and_the_length():
    s = lc.smooth(np.full(101, 2.0))
    assert s.shape == (101,) and np.allclose(s, 2.0)


def test_a_budget_above_eighty_percent_of_the_reference_asks_for_a_longer_reference():
    n = 3000
    slow = lc.plateau(0.3 + 1.2 / (1 + np.exp((np.arange(1, n + 1) - 2300) / 50)))   # drops late
    assert slow["plateau_step"] > 0.8 * n
    d = lc.decide({"slow": slow}, n)
    assert d == {"budget": None, "repeat_at": 2 * n, "largest_plateau": lc.budget({"slow": slow})}
    fast = lc.plateau(0.3 + 1.2 * np.exp(-np.arange(1, n + 1) / 100))
    assert lc.decide({"fast": fast}, n) == {"budget": lc.budget({"fast": fast}), "repeat_at": None,
                                           "largest_plateau": lc.budget({"fast": fast})}
