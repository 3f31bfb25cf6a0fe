import numpy as np
import pandas as pd

from tauxcharge_assets import model as lstm
from tauxcharge_assets.cleaning import clean_series
from tauxcharge_assets.simulator import SimulationSpec, simulate

HP = lstm.ModelHyperparameters(epochs=1, lstm_units=8, dense_units=8, sample_stride=24, horizon=3)


def batch(n: int, value: float = 50.0) -> lstm.WindowBatch:
    rng = np.random.default_rng(0)
    values = (value + rng.normal(0, 2, (n, 288))).astype(np.float32)
    return lstm.WindowBatch(values, np.ones_like(values), np.arange(n, dtype=np.int32), np.zeros(n, int))


def test_inputs_are_patched_normalised_and_masked() -> None:
    b = batch(3)
    b.mask[0, :12] = 0
    inputs, mean, sigma = lstm.make_inputs(b, HP)
    assert inputs["sequence"].shape == (3, 24, 26)
    assert inputs["sequence"].dtype == np.float32
    assert inputs["name_id"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(mean[1], b.values[1].mean(), rtol=1e-5)
    assert inputs["sequence"][0, 0, 12:24].sum() == 0  # the mask of the first patch
    assert np.all(sigma >= HP.min_sigma)


def test_baselines_on_a_known_series() -> None:
    values = np.tile(np.arange(288, dtype=np.float32), (1, 1))
    b = lstm.WindowBatch(values, np.ones_like(values), np.zeros(1, np.int32), np.zeros(1, int))
    forecasts = lstm.baseline_forecasts(b, HP)
    assert forecasts["naive"].tolist() == [[287.0, 287.0, 287.0]]
    # the value one day (288 steps) before targets t, t+1, t+2 are the window's first three values
    assert forecasts["seasonal_naive"].tolist() == [[0.0, 1.0, 2.0]]


def test_train_evaluate_and_predict_with_unseen_names() -> None:
    sim = simulate(SimulationSpec(n_names=4, days=3, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=1))
    frame = sim.values.stack().rename("value").reset_index()
    frame.columns = ["timestamp", "name", "value"]
    frame["ingested_at"] = frame["timestamp"]
    end = sim.values.index[-1] + pd.Timedelta(minutes=5)
    cleaned = clean_series(frame, end - pd.Timedelta(days=3), end)
    ids = {name: i + 1 for i, name in enumerate(cleaned.names)}
    training = lstm.make_training_set(cleaned.values, cleaned.observed, ids, HP)
    assert training.holdout_cutoff > cleaned.values.index[0]
    model, history = lstm.fit(training, HP, vocabulary_size=len(ids) + 1)
    assert len(history["loss"]) == 1
    metrics = lstm.evaluate(model, training, HP)
    assert {"mae_h1_lstm", "mae_h1_naive", "mae_h1_seasonal_naive"} <= metrics.keys()
    unseen = batch(2)
    unseen = lstm.WindowBatch(unseen.values, unseen.mask, np.array([1, 999], np.int32), unseen.first_slot_minute)
    predictions = lstm.predict(model, unseen, HP)
    assert predictions.shape == (2, 3)
    assert np.isfinite(predictions).all()
