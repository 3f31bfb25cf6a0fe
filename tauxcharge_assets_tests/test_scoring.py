"""The detector's scores: anomalies high, calm series low, causal, and configuration checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.detection import scoring

CONFIG = scoring.ScoringConfig()


def calm(rows: int = 1500, names: int = 3, seed: int = 0) -> np.ndarray:
    """Daily-cycle load with noise; forecasts below are the noiseless cycle, as a good model gives."""
    rng = np.random.default_rng(seed)
    cycle = 40 + 10 * np.sin(2 * np.pi * np.arange(rows) / 288)
    return cycle[:, None] + rng.normal(0, 1, (rows, names))


def forecasts(actual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = actual.shape[0]
    p50 = np.repeat((40 + 10 * np.sin(2 * np.pi * np.arange(rows) / 288))[:, None], actual.shape[1], axis=1)
    return p50 - 1.28, p50, p50 + 1.28


def score(actual: np.ndarray, config: scoring.ScoringConfig = CONFIG) -> np.ndarray:
    return scoring.score_series(actual, *forecasts(actual), config).score


def test_spike_scores_high_and_calm_scores_low() -> None:
    actual = calm()
    actual[1200, 1] += 25.0
    scores = score(actual)
    assert scores.shape == actual.shape
    assert np.nanmin(scores) >= 0.0 and np.nanmax(scores) < 1.0
    assert scores[1200, 1] > 0.7
    late = scores[400:, [0, 2]]  # after the first day of history
    assert np.quantile(late, 0.99) < 0.5
    assert scores[1200, 1] > late.max() + 0.1


def test_level_shift_and_flat_line_are_found() -> None:
    actual = calm(names=2)
    actual[1000:, 0] += 8.0  # a lasting shift, within the daily range
    actual[1100:1200, 1] = actual[1099, 1]  # a stuck collector
    scores = score(actual)
    assert scores[1000:1012, 0].max() > 0.6
    assert scores[1100:1115, 1].max() > 0.6


def test_one_alarm_per_episode() -> None:
    actual = calm(names=1)
    actual[1000:1100, 0] += 30.0
    with_alarm_window = score(actual)[:, 0]
    without = score(actual, dataclasses.replace(CONFIG, alarm_window=0))[:, 0]
    assert (with_alarm_window[1000:1100] > 0.5).sum() <= 2
    assert (without[1000:1100] > 0.5).sum() > (with_alarm_window[1000:1100] > 0.5).sum()


def test_scores_are_causal() -> None:
    actual = calm()
    actual[900, 0] += 20.0
    full = score(actual)
    changed = actual.copy()
    changed[700:] = np.random.default_rng(5).normal(80, 30, changed[700:].shape)  # a different future
    for other in (actual[:700], changed):
        assert np.array_equal(score(other)[:700], full[:700], equal_nan=True)


def test_names_are_scored_independently() -> None:
    actual = calm()
    actual[1200, 2] += 25.0
    together = score(actual)
    alone = score(actual[:, [0]])
    assert np.array_equal(together[:, [0]], alone, equal_nan=True)


def test_blocks_of_names_and_the_newest_slots_match_one_whole_pass() -> None:
    actual = calm(rows=700, names=7)
    actual[650, 3] += 30.0
    actual[100:130, 5] = np.nan
    whole = scoring.score_series(actual, *forecasts(actual), CONFIG)
    blocked = scoring.score_series(actual, *forecasts(actual), CONFIG, last_slots=4, names_per_block=3)
    assert blocked.score.shape == (4, 7)
    assert np.array_equal(blocked.score, whole.score[-4:], equal_nan=True)
    assert np.array_equal(blocked.combined_ratio, whole.combined_ratio[-4:])
    for kind in scoring.EVIDENCE:
        assert np.array_equal(blocked.ratio[kind], whole.ratio[kind][-4:])


def test_moving_statistics_match_pandas_rolling() -> None:
    """The bottleneck windows keep pandas' semantics: NaN skipped, ``min_periods``, flat windows exactly 0."""
    values = calm(rows=400, names=3)
    values[rng_rows(400, 40), 1] = np.nan
    values[200:260, 2] = 41.5  # a flat line: its spread of changes must be exactly 0
    frame = pd.DataFrame(values)
    config = scoring.ScoringConfig(level_window=6, baseline_window=50, record_window=60, min_history=12)
    level = (frame.rolling(6, min_periods=1).mean() - frame.shift(6).rolling(50, min_periods=12).median()).abs()
    np.testing.assert_allclose(
        scoring._level_shift(values, config), level.to_numpy(), rtol=1e-10, atol=1e-9, equal_nan=True
    )
    spread = frame.diff().rolling(6, min_periods=2).std()
    ours = scoring._moving_std(values - scoring._shift(values, 1), 6, 2)
    np.testing.assert_allclose(ours, spread.to_numpy(), rtol=1e-7, atol=1e-9, equal_nan=True)
    assert (ours[212:260, 2] == 0.0).all()
    evidence = level.fillna(0.0)
    record = evidence.shift(1).rolling(60, min_periods=12).max().to_numpy()
    value = evidence.to_numpy()
    expected = np.where(record > 0, value / np.where(record > 0, record, 1.0), 0.0)
    expected[~(record > 0) & (value > 0)] = config.max_ratio  # no record yet, or a flat evidence that moves
    np.testing.assert_allclose(scoring._record_ratio(evidence.to_numpy(), config), np.nan_to_num(expected))


def rng_rows(rows: int, count: int) -> np.ndarray:
    return np.random.default_rng(9).choice(rows, count, replace=False)


def test_missing_values_score_nan_and_do_not_break_the_rest() -> None:
    actual = calm(names=1)
    actual[500:510, 0] = np.nan
    scores = score(actual)[:, 0]
    assert np.isnan(scores[500:510]).all()
    assert np.isfinite(scores[510:]).all()


def test_standardised_residuals_use_the_side_of_the_interval() -> None:
    z = scoring.standardised_residuals(np.array([12.0, 9.0]), np.array([9.0, 9.0]), np.array([10.0]), np.array([14.0]))
    assert z == pytest.approx([0.5 * scoring.Z90, -1.0 * scoring.Z90])


@pytest.mark.parametrize(
    "fields",
    [
        {"warning_score": 0.9, "critical_score": 0.8},
        {"min_history": 1},
        {"level_window": 1},
        {"record_window": 5},
        {"alarm_window": -1},
        {"max_ratio": 1.0},
    ],
)
def test_bad_configuration_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        scoring.ScoringConfig(**fields)


def test_severity_follows_the_thresholds() -> None:
    labels = scoring.severity(np.array([0.1, 0.55, 0.95]), scoring.ScoringConfig(warning_score=0.5, critical_score=0.9))
    assert labels.tolist() == ["normal", "warning", "critical"]


def test_the_first_forecasts_of_a_name_do_not_alarm_on_ordinary_errors() -> None:
    """Right after a deployment the forecast errors have no record: a calibrated one stands in."""
    actual = calm(rows=400, names=2)
    p10, p50, p90 = (np.full_like(actual, np.nan) for _ in range(3))
    lower, middle, upper = forecasts(actual)
    p10[-3:], p50[-3:], p90[-3:] = lower[-3:], middle[-3:], upper[-3:]  # three ticks of forecasts so far
    actual[-1, 1] = middle[-1, 1] + 25.0  # a spike on name 1, at the newest slot
    result = scoring.score_series(actual, p10, p50, p90, CONFIG)
    assert result.score[-1, 0] < CONFIG.warning_score  # an ordinary error on name 0
    assert result.score[-1, 1] >= CONFIG.critical_score
    assert scoring.calibrated_record(288) == pytest.approx(3.035, abs=1e-3)
