"""The network's inputs, its quantile head, the per-name scaler, calibration and the backtest adapter."""

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.model import backtest
from tauxcharge_assets.model import network as lstm
from tauxcharge_assets.model.forecaster import (
    ForecastModel,
    LstmForecaster,
    NameScaler,
    SeriesData,
    series_from_frame,
    train_forecast_model,
    windows,
)

HP = lstm.ModelHyperparameters(epochs=1, lstm_units=8, dense_units=8, sample_stride=24, horizon=3)
MONDAY_NOON = np.datetime64("2026-03-02T12:00", "ns")


def batch(n: int, value: float = 50.0, scale: float = 2.0) -> lstm.WindowBatch:
    rng = np.random.default_rng(0)
    values = (value + rng.normal(0, 2, (n, 288))).astype(np.float32)
    return lstm.WindowBatch(
        values,
        np.ones_like(values),
        np.arange(n, dtype=np.int32),
        np.full(n, scale, np.float32),
        np.full(n, MONDAY_NOON),
    )


def test_inputs_are_relative_to_the_last_value_in_units_of_the_scale_with_calendar() -> None:
    b = batch(3)
    b.mask[0, :12] = 0
    inputs, last = lstm.make_inputs(b, HP)
    assert inputs["sequence"].shape == (3, 24, 12 + 12 + 4)
    assert inputs["recent"].shape == (3, 24) and inputs["seasonal"].shape == (3, 6)
    np.testing.assert_allclose(last, b.values[:, -1])
    np.testing.assert_allclose(inputs["sequence"][1, 0, :12], (b.values[1, :12] - last[1]) / 2.0, rtol=1e-5)
    assert inputs["recent"][2, 11] == 0.0  # the last value relative to itself
    assert inputs["sequence"][0, 0, 12:24].sum() == 0  # the mask of the first patch
    # Monday 12:00: time of day half way (sin 0, cos -1), Monday = start of the week (sin 0, cos 1)
    np.testing.assert_allclose(inputs["calendar"][0], [0.0, -1.0, 0.0, 1.0], atol=1e-6)


def test_scaler_is_fitted_on_training_values_and_falls_back_to_the_window_for_unseen_names() -> None:
    scaler = NameScaler().fit(pd.DataFrame({"a": [0.0, 2.0, 0.0, 2.0, np.nan, 2.0]}))
    assert scaler.scales_["a"] == pytest.approx(2.0)
    window = np.tile(np.array([10.0, 13.0], np.float32), 144)[None, :]
    scales = scaler.for_windows(["a", "never-seen"], np.vstack([window, window]), np.ones((2, 288)))
    np.testing.assert_allclose(scales, [2.0, 3.0])


def _interval_coverage(intervals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Share of targets inside [p10, p90], per horizon."""
    y = targets[..., 0]
    return ((intervals[..., 0] <= y) & (y <= intervals[..., 2])).mean(axis=0)


@pytest.mark.parametrize("half_width", [0.2, 3.0], ids=["too-narrow", "too-wide"])
def test_conformal_adjustment_brings_held_out_coverage_to_80_percent(half_width: float) -> None:
    """Fitted on calibration targets, scored on other targets of the same distribution: 80 % per horizon,
    whether the raw interval was too narrow (widened) or too wide (narrowed)."""
    rng = np.random.default_rng(1)
    n, spread = 20_000, np.array([1.0, 3.0])  # the second horizon is three times noisier
    calibration = (rng.normal(0, 1, (n, 2)) * spread)[..., None].astype(np.float32)
    held_out = (rng.normal(0, 1, (n, 2)) * spread)[..., None].astype(np.float32)
    raw = np.stack([np.full((n, 2), -half_width), np.zeros((n, 2)), np.full((n, 2), half_width)], axis=-1)
    adjustment = lstm.conformal_adjustment(raw, calibration)
    coverage = _interval_coverage(lstm.apply_adjustment(raw, adjustment), held_out)
    assert np.all((coverage >= 0.785) & (coverage <= 0.815)), coverage
    expected = 1.2816 * spread - half_width  # N(0, s): the 80 % interval is +-1.28 s
    assert np.all(np.abs(adjustment - expected) <= 0.05 * spread), (adjustment, expected)


def test_windows_are_causal_and_left_padded() -> None:
    values = np.arange(20, dtype=np.float32)
    values[3] = np.nan
    hp = lstm.ModelHyperparameters(window=12, patch=12, horizon=2)
    series = SeriesData("x", 1, values, pd.Timestamp("2026-03-02", tz="UTC"))
    b, targets = windows(series, np.array([5, 15]), hp, NameScaler.from_scales({"x": 1.0}))
    assert b.values[0, -1] == 4.0 and b.mask[0, :7].sum() == 0  # slots before the series start are masked
    assert b.mask[0, 3 + 7] == 0 and b.values[0, 3 + 7] == 2.0  # a gap carries the previous value forward
    np.testing.assert_array_equal(targets, [[5.0, 6.0], [15.0, 16.0]])
    assert b.origin[1] == np.datetime64("2026-03-02T01:15", "ns")


def test_train_predict_quantiles_and_backtest_adapter() -> None:
    sim = simulate(SimulationSpec(n_names=4, days=3, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=1))
    ids = {name: i + 1 for i, name in enumerate(sim.values.columns)}
    fitted = train_forecast_model(series_from_frame(sim.values, ids), HP, vocabulary_size=len(ids) + 1)
    assert len(fitted.history["loss"]) == 1 and fitted.interval_adjustment.shape == (3,)
    unseen = batch(2)
    unseen = lstm.WindowBatch(unseen.values, unseen.mask, np.array([1, 999], np.int32), unseen.scale, unseen.origin)
    quantiles = fitted.predict_quantiles(unseen)
    assert quantiles.shape == (2, 3, 3) and np.isfinite(quantiles).all()
    assert np.all(quantiles[..., 0] <= quantiles[..., 1]) and np.all(quantiles[..., 1] <= quantiles[..., 2])
    forecaster = LstmForecaster(HP, {n: sim.values.index[0] for n in ids}, fitted, ids)
    name = sim.values.columns[0]
    backtest.check_causal(forecaster, sim.values[name].to_numpy(np.float64), np.array([300, 500, 700]), 3)


def test_training_beats_the_untrained_network_on_held_out_windows() -> None:
    """The last quarter of the series is never seen in training; the trained p50 must forecast it clearly
    better than the same network before training (a fit that does nothing would tie)."""
    hp = lstm.ModelHyperparameters(
        epochs=2, lstm_units=8, dense_units=8, horizon=3, sample_stride=4, batch_size=64, learning_rate=1e-2
    )
    sim = simulate(SimulationSpec(n_names=4, days=4, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=1))
    ids = {name: i + 1 for i, name in enumerate(sim.values.columns)}
    cut = int(len(sim.values) * 0.75)
    trained = train_forecast_model(series_from_frame(sim.values.iloc[:cut], ids), hp, vocabulary_size=len(ids) + 1)
    untrained = ForecastModel(lstm.build_model(hp, len(ids) + 1), hp, trained.scaler, np.zeros(3, np.float32))
    errors: dict[str, list[np.ndarray]] = {"trained": [], "untrained": []}
    for item in series_from_frame(sim.values, ids):
        held_out, targets = windows(item, np.arange(cut, len(sim.values) - hp.horizon, 3), hp, trained.scaler)
        known = np.isfinite(targets)
        for label, model in (("trained", trained), ("untrained", untrained)):
            errors[label].append(np.abs(model.predict_quantiles(held_out)[..., 1] - targets)[known])
    mae = {label: float(np.concatenate(values).mean()) for label, values in errors.items()}
    assert mae["trained"] < 0.85 * mae["untrained"], mae


def test_the_numpy_forward_pass_gives_the_keras_quantiles() -> None:
    """A tick runs the network from its weights without TensorFlow; it must be the same network."""
    from tauxcharge_assets.model.numpy_network import NumpyNetwork, to_npz, weights_of

    hp = lstm.ModelHyperparameters(lstm_units=6, dense_units=5, embedding_dim=3, horizon=4)
    network = lstm.build_model(hp, vocabulary_size=7)
    rng = np.random.default_rng(3)
    network.set_weights([rng.normal(0, 0.6, w.shape).astype(np.float32) for w in network.get_weights()])
    b = batch(40)
    b.mask[5, 100:200] = 0
    b.name_ids[:] = rng.integers(0, 12, 40)  # ids the network never saw (>= 7) map to 0
    from_npz = NumpyNetwork.from_npz(to_npz(weights_of(network)))
    assert from_npz.vocabulary_size == 7
    ours, theirs = lstm.predict_scaled(from_npz, b, hp), lstm.predict_scaled(network, b, hp)
    assert ours.shape == theirs.shape == (40, 4, 3) and ours.dtype == np.float32
    assert np.abs(theirs).max() > 0.5  # a network whose outputs are not all near zero
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert (np.diff(ours, axis=-1) >= 0).all()  # p10 <= p50 <= p90
