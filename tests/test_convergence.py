"""dgbench.convergence: each rule on hand-made series, and the verdict from run-folder files."""
import json

import numpy as np
import pytest

from dgbench import convergence as cv
from dgbench.convergence import of_run, verdict

T = 100
# loss falls from 2.0 to 0.5 by step 60, then stays there; val Dice rises to 0.80 by step 60
GOOD_LOSS = list(np.r_[np.linspace(2.0, 0.5, 60), np.full(40, 0.5)])
GOOD_VAL = [(20, 0.40), (40, 0.70), (60, 0.79), (80, 0.80), (100, 0.805)]


def failed(v: dict) -> set:
    return {k for k in ("left_start", "loss_plateaued", "val_plateaued", "learned") if not v[k]}


def test_a_good_run_converges():
    v = verdict(GOOD_LOSS, GOOD_VAL, T)
    assert v["converged"] and v["reasons"] == [] and failed(v) == set()
    assert v["initial_loss"] == pytest.approx(np.mean(GOOD_LOSS[:5]))
    assert v["final_loss"] == pytest.approx(0.5)
    assert v["loss_tail_drop"] == pytest.approx(0.0, abs=1e-9)
    assert v["val_tail_gain"] == pytest.approx(0.005)
    assert v["best_val_dice"] == pytest.approx(0.805)
    json.dumps(v, allow_nan=False)                            # done.json-safe


def test_never_left_its_starting_loss():
    loss = list(np.linspace(1.5, 1.4, T))                     # falls, but by less than 20%
    loss[-20:] = [1.4] * 20                                   # and is flat at the end
    v = verdict(loss, GOOD_VAL, T)
    assert failed(v) == {"left_start"}
    assert v["reasons"] == ["never left its starting loss (1.50 -> 1.40)"]


def test_training_loss_still_falling():
    loss = list(np.linspace(2.0, 0.4, T))                     # straight line down to the end
    v = verdict(loss, GOOD_VAL, T)
    assert failed(v) == {"loss_plateaued"}
    # the line over the last 20 steps drops 19 x 1.6/99 = 0.307; the whole drop is the mean of
    # the first 5 steps minus the mean of the last 10: 1.968 - 0.473 = 1.495, so 20.5%
    share = 19 * 1.6 / 99 / (np.mean(loss[:5]) - np.mean(loss[-10:]))
    assert v["loss_tail_drop"] == pytest.approx(share, abs=1e-6)
    assert v["reasons"] == [f"training loss still falling ({100 * share:.1f}% of its drop in the last 20% of steps)"]


def test_noise_does_not_count_as_falling():
    rng = np.random.default_rng(0)
    loss = [v + rng.normal(0, 0.05) for v in GOOD_LOSS]
    assert verdict(loss, GOOD_VAL, T)["loss_plateaued"]


def test_a_cosine_tail_after_most_of_the_drop_is_a_plateau():
    """Under cosine annealing the loss sinks by a good share of its *level* in the last 20% of
    steps after the model stopped improving; what counts is the share of the whole drop."""
    n = 3000
    loss = np.r_[np.linspace(1.3, 0.50, 2400), np.linspace(0.50, 0.44, 600)]   # tail: 12.8% of its level
    v = verdict(list(loss), GOOD_VAL, n)
    assert v["loss_plateaued"] and v["loss_tail_drop"] < 0.10


def test_a_drop_within_the_noise_is_not_falling_but_a_clear_one_is():
    # the same tail drop of ~15% of the whole drop: within two standard errors under per-step
    # noise of 40% of the loss over a 90-step tail, far outside them under 5% noise
    rng = np.random.default_rng(1)
    n = 450
    curve = np.r_[np.linspace(1.6, 0.6, n - 90), np.linspace(0.6, 0.45, 90)]
    v = verdict(list(curve * (1 + 0.4 * rng.standard_normal(n))), GOOD_VAL, n)
    assert v["loss_plateaued"] and v["loss_tail_drop"] >= 0.10 > v["loss_tail_drop"] - 2 * v["loss_tail_drop_se"]
    v = verdict(list(curve * (1 + 0.05 * rng.standard_normal(n))), GOOD_VAL, n)
    assert not v["loss_plateaued"] and v["loss_tail_drop"] > max(0.10, 2 * v["loss_tail_drop_se"])


def test_source_val_dice_still_rising():
    val = [(20, 0.40), (40, 0.55), (60, 0.62), (80, 0.66), (90, 0.68), (100, 0.70)]
    v = verdict(GOOD_LOSS, val, T)
    assert failed(v) == {"val_plateaued"}
    assert v["val_tail_gain"] == pytest.approx(0.04)          # the line through steps 80-100: 0.66 -> 0.70
    assert v["val_tail_gain_se"] == pytest.approx(0.0, abs=1e-9)
    assert v["reasons"] == ["source-val Dice still rising (+0.040 ± 0.000 over the last 20%)"]


def test_one_low_validation_at_the_window_start_is_noise_not_a_rise():
    """A 2400-step ERM on synth (seed 1): its last five validations. Last minus first is +0.042,
    over the threshold; the line through them rises 0.030, within two standard errors (0.031 each)."""
    hist = [(2000, 0.833168), (2100, 0.886364), (2200, 0.897361), (2300, 0.877810), (2400, 0.875400)]
    v = verdict([1.3] * 100 + [0.5] * 2300, [(1900, 0.881783)] + hist, 2400)
    assert v["val_plateaued"] and v["converged"]
    assert v["val_tail_gain"] == pytest.approx(0.0302, abs=1e-3)
    assert v["val_tail_gain_se"] == pytest.approx(0.0310, abs=1e-3)


def test_a_steady_rise_through_the_noise_is_still_rising():
    """MaskGen seed 0 at 2400 steps: +0.026 on the line, just over two standard errors."""
    hist = [(2000, 0.489714), (2100, 0.481797), (2200, 0.482137), (2300, 0.500472), (2400, 0.513015)]
    v = verdict([1.3] * 100 + [0.5] * 2300, hist, 2400)
    assert not v["val_plateaued"]
    assert v["val_tail_gain"] >= 2 * v["val_tail_gain_se"] and v["val_tail_gain"] == pytest.approx(0.0261, abs=1e-3)
    assert v["reasons"] == ["source-val Dice still rising (+0.026 ± 0.012 over the last 20%)"]
    # the same gain made of larger swings is noise
    swings = [(s, d + (0.03 if i % 2 else -0.03)) for i, (s, d) in enumerate(hist)]
    assert verdict([1.3] * 100 + [0.5] * 2300, swings, 2400)["val_plateaued"]


def test_val_window_with_one_point_compares_with_the_previous_validation():
    rising = [(50, 0.60), (100, 0.65)]                         # only step 100 is in the last 20%
    v = verdict(GOOD_LOSS, rising, T)
    assert not v["val_plateaued"] and v["val_tail_gain"] == pytest.approx(0.05)
    assert verdict(GOOD_LOSS, [(50, 0.64), (100, 0.65)], T)["val_plateaued"]
    one = verdict(GOOD_LOSS, [(100, 0.65)], T)                 # nothing to compare with
    assert one["val_plateaued"] and one["val_tail_gain"] is None
    assert verdict(GOOD_LOSS, [(50, 0.70), (100, 0.60)], T)["val_plateaued"]   # falling is not rising


def test_predicts_only_background():
    val = [(s, 0.01 + 0.0001 * s / 20) for s, _ in GOOD_VAL]
    v = verdict(GOOD_LOSS, val, T)
    assert failed(v) == {"learned"}
    assert v["reasons"] == ["predicts (almost) only background: best source-val Dice 0.011"]


def test_a_run_that_never_learned():
    """Flat loss, zero Dice: two rules fire, the other two have nothing to object to."""
    v = verdict([1.2] * T, [(s, 0.0) for s, _ in GOOD_VAL], T)
    assert not v["converged"]
    assert failed(v) == {"left_start", "learned"}
    assert v["reasons"] == ["never left its starting loss (1.20 -> 1.20)",
                            "predicts (almost) only background: best source-val Dice 0.000"]


def test_thresholds_are_the_documented_ones():
    assert (cv.FIRST_FRAC, cv.LAST_FRAC, cv.LEFT_START_RATIO, cv.TAIL_FRAC, cv.MAX_TAIL_SHARE,
            cv.MAX_VAL_GAIN, cv.MIN_BEST_DICE) == (0.05, 0.10, 0.8, 0.20, 0.10, 0.02, 0.05)
    for name in ("LEFT_START_RATIO", "MAX_TAIL_SHARE", "MAX_VAL_GAIN", "MIN_BEST_DICE"):
        assert name in cv.__doc__
    with pytest.raises(ValueError):
        verdict([], GOOD_VAL, T)


# -- from the run folder ------------------------------------------------------------------------
def _write(d, losses=None, hist=None):
    d.mkdir(parents=True, exist_ok=True)
    if losses is not None:
        (d / "train_loss.csv").write_text("step,loss\n" + "".join(f"{s},{v}\n" for s, v in losses))
    if hist is not None:
        (d / "val_history.csv").write_text("step,loss,val_dice\n" + "".join(f"{s},{l},{v}\n" for s, l, v in hist))


def _hist(losses, val):
    """val_history rows as dgbench.train writes them: the mean loss since the previous validation."""
    rows, prev = [], 0
    for s, dice in val:
        rows.append((s, float(np.mean(losses[prev:s])), dice))
        prev = s
    return rows


def test_of_run_prefers_train_loss(tmp_path):
    _write(tmp_path, list(enumerate(GOOD_LOSS, 1)), _hist(GOOD_LOSS, GOOD_VAL))
    v = of_run(tmp_path, T)
    assert v["source"] == "train_loss" and v["converged"]
    assert v == {**verdict(GOOD_LOSS, GOOD_VAL, T), "source": "train_loss"}


def test_of_run_falls_back_to_val_history(tmp_path):
    flat = [1.2] * T
    _write(tmp_path / "old_good", None, _hist(GOOD_LOSS, GOOD_VAL))
    good = of_run(tmp_path / "old_good", T)
    assert good["source"] == "val_history" and good["converged"], good
    _write(tmp_path / "old_flat", None, _hist(flat, [(s, 0.0) for s, _ in GOOD_VAL]))
    bad = of_run(tmp_path / "old_flat", T)
    assert bad["source"] == "val_history" and not bad["converged"]
    assert not bad["left_start"] and not bad["learned"]
    # resumed by the new code from an old run: train_loss.csv starts late, so it is not used
    _write(tmp_path / "resumed", list(enumerate(GOOD_LOSS, 1))[50:], _hist(GOOD_LOSS, GOOD_VAL))
    assert of_run(tmp_path / "resumed", T)["source"] == "val_history"


def test_of_run_without_history_is_unknown_not_converged(tmp_path):
    v = of_run(tmp_path, T)
    assert v["converged"] is None and v["source"] == "none"
    assert v["reasons"] == [cv.UNKNOWN_REASON]
    assert cv.describe(v) == cv.UNKNOWN_REASON
