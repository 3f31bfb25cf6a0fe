"""The detector: likelihood of the forecast surprise, the range rule, one alarm per episode, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from tauxcharge_assets.detection import detector
from tauxcharge_assets.detection.detector import DetectorConfig, DetectorState, score_matrix, step

CONFIG = DetectorConfig()
WARM = CONFIG.learning_slots + CONFIG.estimation_slots + CONFIG.averaging_window


def calm(slots: int, names: int = 1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Values around 50 forecast well: p50 the true mean, the band its 80 % interval."""
    rng = np.random.default_rng(seed)
    values = 50 + rng.normal(0, 1, (slots, names))
    p50 = np.full_like(values, 50.0)
    return values, p50 - 1.2816, p50, p50 + 1.2816


def test_a_calm_series_never_alarms_and_a_surprise_after_the_warm_up_does() -> None:
    values, p10, p50, p90 = calm(WARM + 200)
    values[5, 0] = 70.0  # an early outlier widens the range, so what follows is not a range record
    values[WARM + 100 : WARM + 103, 0] = 58.0  # 8 sigma for three slots: a burst the forecast did not expect
    scores = score_matrix(values, p10, p50, p90)
    assert np.nanmax(scores[20 : WARM + 100]) < CONFIG.warning_score
    assert np.nanmax(scores[WARM + 100 : WARM + 103]) >= CONFIG.critical_score


def test_nothing_scores_before_the_likelihood_has_learned_the_name() -> None:
    values, p10, p50, p90 = calm(WARM - 20)
    values[5, 0] = 80.0
    values[WARM - 30, 0] = 75.0  # a big surprise, but within the range and before the estimation is done
    scores = score_matrix(values, p10, p50, p90)
    assert np.nanmax(scores[CONFIG.range_warmup :]) < CONFIG.warning_score


def test_a_new_thirty_day_record_scores_one_and_an_old_extreme_stops_counting() -> None:
    values, p10, p50, p90 = calm(40)
    values[:, 0] = 50.0 + 3.0 * np.sin(np.arange(40))  # the range is [47, 53] from the first slots on
    values[30, 0] = 60.0  # beyond it by far more than 5 % of it
    scores = score_matrix(values, np.full_like(p10, np.nan), p50 * np.nan, p90 * np.nan)  # no forecast at all
    assert scores[30, 0] == 1.0 and np.nanmax(scores[:30]) == 0.0
    # An extreme stays in the range for range_days + today, then it is forgotten.
    state = DetectorState.new(["a"])
    day = detector.SLOTS_PER_DAY
    step(state, 0, np.array([100.0]), *(np.array([np.nan]),) * 3)
    for slot in range(1, 20):
        step(state, slot, np.array([50.0 + slot % 3]), *(np.array([np.nan]),) * 3)
    last_day_kept = CONFIG.range_days * day + 5  # day 0 is still one of the 30 days before day 30
    assert step(state, last_day_kept, np.array([51.0]), *(np.array([np.nan]),) * 3).high[0] == 100.0
    step(state, last_day_kept + 1, np.array([49.0]), *(np.array([np.nan]),) * 3)
    forgotten = step(state, last_day_kept + day, np.array([90.0]), *(np.array([np.nan]),) * 3)
    assert forgotten.high[0] < 100.0 and forgotten.range_record[0]


def test_an_episode_alarms_once() -> None:
    values, p10, p50, p90 = calm(WARM + 200)
    values[5, 0] = 75.0
    values[WARM + 100 : WARM + 104, 0] = 64.0  # four surprising slots in a row
    scores = score_matrix(values, p10, p50, p90)
    alarms = np.flatnonzero(scores[:, 0] >= CONFIG.warning_score)
    assert len(alarms) == 1 and WARM + 100 <= alarms[0] <= WARM + 103


def test_missing_values_score_nan_and_keep_the_state() -> None:
    values, p10, p50, p90 = calm(WARM + 50, names=2)
    values[100:110, 1] = np.nan
    scores = score_matrix(values, p10, p50, p90)
    assert np.isnan(scores[100:110, 1]).all() and np.isfinite(scores[100:110, 0]).all()


def test_streaming_from_a_copied_state_equals_one_pass_and_names_never_mix() -> None:
    values, p10, p50, p90 = calm(900, names=3, seed=4)
    values[600, 1] = 70.0
    whole = score_matrix(values, p10, p50, p90)
    state = DetectorState.new(["a", "b", "c"])
    first = score_matrix(values[:450], p10[:450], p50[:450], p90[:450], state=state)
    resumed = state.copy()
    rest = score_matrix(values[450:], p10[450:], p50[450:], p90[450:], first_slot=450, state=resumed)
    assert np.array_equal(whole, np.vstack([first, rest]), equal_nan=True)
    alone = score_matrix(values[:, [1]], p10[:, [1]], p50[:, [1]], p90[:, [1]])
    assert np.array_equal(whole[:, [1]], alone, equal_nan=True)


def test_scores_are_causal() -> None:
    values, p10, p50, p90 = calm(700, seed=2)
    full = score_matrix(values, p10, p50, p90)
    values[650:] = 99.0
    assert np.array_equal(score_matrix(values, p10, p50, p90)[:650], full[:650], equal_nan=True)


def test_a_state_follows_its_names() -> None:
    values, p10, p50, p90 = calm(50, names=2)
    state = DetectorState.new(["a", "b"])
    score_matrix(values, p10, p50, p90, state=state)
    moved = state.for_names(["c", "b"])
    assert moved.names == ["c", "b"]
    assert moved.seen.tolist() == [0.0, state.seen[1]]
    assert np.array_equal(moved.low[:, 1], state.low[:, 1])


@pytest.mark.parametrize(
    "fields",
    [
        {"warning_score": 0.9, "critical_score": 0.8},
        {"averaging_window": 0},
        {"raw_decades": 0.0},
        {"range_tolerance": -0.1},
    ],
)
def test_bad_configuration_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        DetectorConfig(**fields)


def test_severity_bands() -> None:
    labels = detector.severity(np.array([0.1, 0.55, 0.95]))
    assert labels.tolist() == ["normal", "warning", "critical"]


def test_a_collector_stuck_on_one_value_alarms_once_and_usual_repeats_do_not() -> None:
    rng = np.random.default_rng(5)
    nan = np.full((700, 2), np.nan)
    wave = 50 + 5 * np.sin(0.7 * np.arange(700)) + rng.uniform(-0.5, 0.5, 700)
    values = np.round(np.column_stack([wave, wave]), 2)  # changes every slot, inside a range set early ...
    values[500:540, 0] = values[499, 0]  # ... until the collector sticks for 40 slots
    counts = rng.poisson(0.4, 700).astype(float)  # a bursty count: runs of zeros are its habit
    values[:, 1] = counts
    scores = score_matrix(values, nan, nan, nan)
    alarms = np.flatnonzero(scores[:, 0] >= CONFIG.warning_score)
    assert len(alarms) == 1 and 500 < alarms[0] < 510
    assert np.nanmax(scores[CONFIG.learning_slots + 20 :, 1]) < CONFIG.warning_score
    off = score_matrix(values, nan, nan, nan, DetectorConfig(stuck_channel=False))
    assert np.nanmax(off[400:, 0]) < CONFIG.warning_score  # the channel, not something else, raised it
