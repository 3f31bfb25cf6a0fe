"""The rolling-origin backtest on series whose scores can be worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.model.backtest import (
    BacktestSpec,
    NaiveForecaster,
    SeasonalNaiveForecaster,
    baseline_forecasters,
    check_causal,
    grid_columns,
    mase_scale,
    regularise,
    run_backtest,
)

SPEC = BacktestSpec(train_fraction=0.7, horizon=12, report_horizons=(1, 12))
ONE_STEP = BacktestSpec(horizon=1, report_horizons=(1,))


def _rows(result, forecaster: str, series: str = "s") -> pd.DataFrame:
    frame = result.frame
    return frame[(frame["forecaster"] == forecaster) & (frame["series"] == series)].set_index("horizon")


class ConstantForecaster:
    """Always the same quantiles, so the metrics depend on the targets alone."""

    def __init__(self, p10: float, p50: float, p90: float, name: str = "constant") -> None:
        self.quantiles = np.array([p10, p50, p90])
        self.name = name

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        pass

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        return np.broadcast_to(self.quantiles, (len(origins), horizon, 3)).copy()


class RecordingForecaster(ConstantForecaster):
    def __init__(self) -> None:
        super().__init__(0.0, 0.0, 0.0, name="recording")
        self.train: dict[str, np.ndarray] = {}
        self.origins: dict[str, np.ndarray] = {}

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        self.train = {k: v.copy() for k, v in train.items()}

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        self.origins[series] = origins.copy()
        return super().forecast(series, values, origins, horizon)


class OracleForecaster(ConstantForecaster):
    """Leaks: reads the very targets it forecasts, or only the value at the origin (off by one)."""

    def __init__(self, whole_window: bool = True) -> None:
        super().__init__(0.0, 0.0, 0.0, name="oracle")
        self.whole_window = whole_window

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        steps = np.arange(horizon)[None, :] if self.whole_window else np.zeros((1, horizon), dtype=int)
        leaked = values[np.asarray(origins)[:, None] + steps]
        return np.repeat(leaked[:, :, None], 3, axis=2)


def test_naive_on_a_line_scores_exactly() -> None:
    # 5, 7, 9, ...: the naive forecast k steps ahead is off by 2k, the training one-step naive MAE is 2.
    line = 5.0 + 2.0 * np.arange(100)
    result = run_backtest({"s": line}, [NaiveForecaster()], SPEC)
    rows = _rows(result, "naive")
    assert rows.loc["1", "mae"] == 2.0 and rows.loc["1", "mase"] == 1.0
    assert rows.loc["12", "mae"] == 24.0 and rows.loc["12", "mase"] == 12.0
    assert rows.loc["mean", "mase"] == pytest.approx(6.5)  # mean of 1..12
    assert (rows["n"] == [19, 19, 19 * 12]).all()  # origins 70..88: the last window ends at the last point
    # The training residuals are exactly 2k, so p10 = p90 = the truth: every target covered.
    assert (rows["coverage"] == 1.0).all()
    assert rows.loc["1", "pinball"] == pytest.approx(0.5 * 2.0 / 3)  # only p50 misses, by 2


def test_seasonal_naive_is_exact_on_a_periodic_series_even_beyond_one_season() -> None:
    pattern = np.array([3.0, 8.0, 1.0, 6.0, 4.0])
    values = np.tile(pattern, 40)
    result = run_backtest({"s": values}, [SeasonalNaiveForecaster(season=5, fallback_season=None)], SPEC)
    rows = _rows(result, "seasonal_5")
    assert (rows["mae"] == 0.0).all() and (rows["mase"] == 0.0).all()  # h=12 reads two seasons back
    assert (rows["coverage"] == 1.0).all() and (rows["pinball"] == 0.0).all()
    naive = _rows(run_backtest({"s": values}, [NaiveForecaster()], SPEC), "naive")
    assert naive.loc["1", "mase"] > 0.5


def test_weekly_season_falls_back_to_the_day_when_history_is_shorter_than_a_week() -> None:
    day = np.sin(np.arange(288) * 2 * np.pi / 288) * 10 + 50
    short = np.tile(day, 4)  # 4 days: no week of history anywhere
    weekly = SeasonalNaiveForecaster(season=2016, fallback_season=288)
    weekly.fit({"s": short[:800]})
    origins = np.array([900, 1000])
    forecast = weekly.forecast("s", short, origins, 12)
    np.testing.assert_allclose(forecast[:, :, 1], short[origins[:, None] + np.arange(12)], atol=1e-12)
    # With a week of history the weekly season wins: a week whose days differ is forecast exactly.
    week = np.concatenate([day + shift for shift in range(7)])
    two_weeks = np.concatenate([week, week])
    point = weekly.forecast("s", two_weeks, np.array([2016 + 500]), 12)[0, :, 1]
    np.testing.assert_allclose(point, two_weeks[2516:2528], atol=1e-12)


def test_baseline_intervals_are_training_residual_quantiles() -> None:
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(size=500))
    naive = NaiveForecaster()
    naive.fit({"s": walk[:350]})
    forecast = naive.forecast("s", walk, np.array([400]), 1)[0, 0]
    residuals = np.diff(walk[:350])
    assert forecast[1] == walk[399]
    assert forecast[0] - forecast[1] == pytest.approx(np.quantile(residuals, 0.1))
    assert forecast[2] - forecast[1] == pytest.approx(np.quantile(residuals, 0.9))


def test_coverage_and_pinball_of_known_intervals() -> None:
    values = np.zeros(100)
    values[70:] = np.tile([0.0, 5.0, 20.0, -20.0, 10.0], 6)  # vs [0, 10]: 3 of every 5 inside
    result = run_backtest({"s": values}, [ConstantForecaster(0.0, 5.0, 10.0)], ONE_STEP)
    row = _rows(result, "constant").loc["1"]
    assert row["n"] == 30 and row["coverage"] == pytest.approx(0.6)
    assert row["mae"] == pytest.approx(np.mean(np.abs(values[70:] - 5.0)))
    targets = values[70:]
    expected = np.mean(
        [np.mean(np.maximum(q * (targets - p), (q - 1) * (targets - p))) for q, p in [(0.1, 0), (0.5, 5), (0.9, 10)]]
    )
    assert row["pinball"] == pytest.approx(expected)


def test_nan_targets_are_skipped() -> None:
    values = np.arange(100, dtype=float)
    values[[75, 80, 81]] = np.nan
    result = run_backtest({"s": values}, [ConstantForecaster(0.0, 0.0, 0.0)], ONE_STEP)
    row = _rows(result, "constant").loc["1"]
    observed = values[70:][~np.isnan(values[70:])]
    assert row["n"] == 27 and row["mae"] == pytest.approx(observed.mean())
    assert np.isfinite(row["mase"])


def test_mase_scale_comes_from_the_training_part_only() -> None:
    values = np.concatenate([np.arange(70, dtype=float), 70 + 100.0 * np.arange(1, 31)])  # test part jumps by 100
    rows = _rows(run_backtest({"s": values}, [NaiveForecaster()], ONE_STEP), "naive")
    assert rows.loc["1", "mae"] == pytest.approx(100.0 * 29 / 30 + 101.0 / 30)  # the first step is 69 -> 170
    assert rows.loc["1", "mase"] == pytest.approx(rows.loc["1", "mae"] / 1.0)
    assert mase_scale(np.array([0.0, 1.0, np.nan, 3.0, 4.0])) == 1.0  # pairs with a gap are ignored


def test_split_is_time_ordered_and_origins_keep_the_window_inside() -> None:
    values = {"a": np.arange(100, dtype=float), "b": np.arange(50, dtype=float) * -1}
    recorder = RecordingForecaster()
    run_backtest(values, [recorder], BacktestSpec(horizon=12, origin_step=5))
    np.testing.assert_array_equal(recorder.train["a"], np.arange(70))
    np.testing.assert_array_equal(recorder.train["b"], -np.arange(35))
    np.testing.assert_array_equal(recorder.origins["a"], np.arange(70, 89, 5))
    np.testing.assert_array_equal(recorder.origins["b"], np.arange(35, 39, 5))


def test_check_causal_catches_leaks_and_passes_the_baselines() -> None:
    rng = np.random.default_rng(1)
    values = np.tile(np.sin(np.arange(288) * 2 * np.pi / 288), 10) + rng.normal(0, 0.1, 288 * 10)
    values[[100, 2500, 2501]] = np.nan
    origins = np.array([300, 1500, 2016, 2400, 2502])
    with pytest.raises(ValueError, match="oracle reads values at or after the origin"):
        check_causal(OracleForecaster(), values, origins, 12)
    with pytest.raises(ValueError, match="5 of 5 origins changed"):
        check_causal(OracleForecaster(whole_window=False), values, origins, 1)  # reads only values[t]
    short_season = SeasonalNaiveForecaster(season=5, fallback_season=None)  # horizon 12 spans two seasons
    for forecaster in [*baseline_forecasters(), short_season]:
        forecaster.fit({"causal-check": values[:1600]})
        check_causal(forecaster, values, origins, 12)


def test_bad_forecasts_are_refused() -> None:
    values = {"s": np.arange(100, dtype=float)}
    with pytest.raises(ValueError, match="non-finite"):
        run_backtest(values, [ConstantForecaster(0.0, np.nan, 1.0)], SPEC)

    class Short(ConstantForecaster):
        def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
            return super().forecast(series, values, origins, horizon)[:, :1]

    with pytest.raises(ValueError, match="forecast shape"):
        run_backtest(values, [Short(0, 0, 0)], SPEC)


def test_summary_pools_coverage_and_markdown_lists_every_forecaster() -> None:
    values = {"steep": 3.0 * np.arange(100), "flat": np.arange(200, dtype=float)}
    result = run_backtest(values, baseline_forecasters(), SPEC)
    summary = result.summary().set_index(["forecaster", "horizon"])
    assert summary.loc[("naive", "12"), "median_mase"] == pytest.approx(12.0)
    assert summary.loc[("naive", "12"), "n"] == 19 + 49 and summary.loc[("naive", "12"), "n_series"] == 2
    table = result.to_markdown()
    assert table.count("\n") == 2 + 3 and "| seasonal_week |" in table and "median MASE h=12" in table


def test_regularise_floors_averages_and_leaves_gaps() -> None:
    stamps = pd.Series(pd.to_datetime(["2024-01-01 00:01", "2024-01-01 00:04", "2024-01-01 00:06", "2024-01-01 00:21"]))
    grid = regularise(stamps, pd.Series([1.0, 3.0, 5.0, 7.0]))
    assert list(grid.index.strftime("%H:%M")) == ["00:00", "00:05", "00:10", "00:15", "00:20"]
    np.testing.assert_array_equal(grid.to_numpy(), [2.0, 5.0, np.nan, np.nan, 7.0])
    frame = pd.DataFrame({"x": [1.0, np.nan], "y": [2.0, 3.0]}, index=grid.index[:2])
    converted = grid_columns(frame)
    assert list(converted) == ["x", "y"] and np.isnan(converted["x"][1])
    with pytest.raises(ValueError, match="sorted grid"):
        grid_columns(frame.iloc[::-1])
