"""ltc/analysis/units.py: live fc8 units, |phi|^2 and the foreground-amplitude check (issue 26)."""
import numpy as np
import pytest

from ltc.analysis import units
from ltc.analysis.features import AnalysisError


def test_unit_stats_counts_units_live_on_any_input():
    F = np.array([[0.0, 2.0, 0.0, 0.0],
                  [0.0, 0.0, 3.0, 0.0],
                  [0.0, 1.0, 0.0, 0.0]])
    st = units.unit_stats(F)
    assert (st["live"], st["dim"], st["n_inputs"]) == (2, 4, 3)
    assert st["active_per_input"] == pytest.approx(1.0)
    assert st["sq_norm_mean"] == pytest.approx((4 + 9 + 1) / 3) and st["sq_norm_median"] == pytest.approx(4)
    np.testing.assert_allclose(st["active_fraction"], [0, 2 / 3, 1 / 3, 0])
    assert units.unit_stats(F, threshold=2.5)["live"] == 1
    assert "2 of 4" in units.units_line(st)
    with pytest.raises(AnalysisError):
        units.unit_stats(np.zeros((0, 4)))


@pytest.mark.parametrize("side", [4, 8, 16])
def test_foreground_amplitude_matches_the_closed_form(side):
    """An item of value c covering a fraction p of a black image: the per-image normalisation divides
    by std = c sqrt(p (1 - p)), so the item's amplitude above the background is 1 / sqrt(p (1 - p))."""
    view = np.zeros((3, 32, 32), np.uint8)
    view[:, :side, :side] = 180
    p = side * side / 1024.0
    assert units.foreground_amplitude(view, eps=0) == pytest.approx(1 / np.sqrt(p * (1 - p)), rel=1e-9)
    assert units.foreground_amplitude(np.zeros((3, 8, 8), np.uint8)) != units.foreground_amplitude(np.zeros((3, 8, 8), np.uint8))  # nan


def test_more_items_mean_a_smaller_amplitude_and_gray_uses_the_channel_mean():
    one, four = np.zeros((3, 64, 64), np.uint8), np.zeros((3, 64, 64), np.uint8)
    one[:, 4:12, 4:12] = 200
    for y, x in ((4, 4), (4, 40), (40, 4), (40, 40)):
        four[:, y:y + 8, x:x + 8] = 200
    assert units.foreground_amplitude(one) > 1.9 * units.foreground_amplitude(four)
    tinted = np.zeros((3, 32, 32), np.uint8)
    tinted[0, :8, :8], tinted[1, :8, :8] = 90, 30        # blue 90, green 30, red 0
    g = np.repeat(tinted.astype(np.float64).mean(axis=0, keepdims=True), 3, axis=0)
    assert units.foreground_amplitude(tinted, gray=True, eps=0) == pytest.approx(40 / g.std())


def test_amplitude_check_within_each_k():
    rng = np.random.RandomState(0)
    k = np.repeat(np.arange(0, 5), 20)
    amp = 10.0 / np.sqrt(np.maximum(k, 1)) + rng.rand(len(k))
    amp[k == 0] = np.nan
    follows = units.amplitude_check(amp, k, amp)
    assert [r["k"] for r in follows["per_k"]] == [1, 2, 3, 4]          # k = 0 has no foreground
    assert follows["mean_spearman"] == pytest.approx(1.0) and follows["amplitude_vs_k"] < -0.8
    opposite = units.amplitude_check(-amp, k, amp)
    assert opposite["mean_spearman"] == pytest.approx(-1.0)
    counts_only = units.amplitude_check(k.astype(float), k, amp)        # constant within k: undefined
    assert np.isnan(counts_only["mean_spearman"])
    assert "amplitude check" in units.amplitude_line(follows)
    with pytest.raises(AnalysisError):
        units.amplitude_check([1, 2], [1], [1, 2])
