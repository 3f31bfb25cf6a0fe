"""One global multi-series LSTM for every name, its training set, its baselines and its inference.

Design choices, and why:
- each input window is normalised by its own mean and spread, so one model serves names of any
  level, and the scaling uses nothing but the input itself (causal, no per-name state to persist);
- the 288 five-minute values are fed as 24 hourly patches of 12 values (plus their mask and the
  time of day): the LSTM still sees all 288 values but runs 24 steps instead of 288, which is what
  makes inference for thousands of names cheap on two cores;
- the network predicts the change from the last value; a name is an embedding (id 0 = unseen name);
- it is judged against the naive (last value) and seasonal-naive (value 288 steps back) forecasts
  on a time-ordered holdout, in the original units.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from tauxcharge_assets.settings import STEP_MINUTES, WINDOW_STEPS


@dataclass(frozen=True)
class ModelHyperparameters:
    window: int = WINDOW_STEPS
    patch: int = 12
    horizon: int = 12
    lstm_units: int = 48
    embedding_dim: int = 8
    dense_units: int = 64
    learning_rate: float = 3e-3
    epochs: int = 6
    batch_size: int = 256
    sample_stride: int = 3
    holdout_fraction: float = 0.2
    min_sigma: float = 1.0
    seed: int = 42

    @property
    def patches(self) -> int:
        return self.window // self.patch

    def as_params(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class WindowBatch:
    """Windows of several names/origins, ready for the model (see ``make_inputs``)."""

    values: np.ndarray  # (n, window) float32, gap-filled
    mask: np.ndarray  # (n, window) float32
    name_ids: np.ndarray  # (n,) int32
    first_slot_minute: np.ndarray  # (n,) minute of day of the first slot of each window


def window_scale(values: np.ndarray, mask: np.ndarray, min_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    observed = np.where(mask > 0, values, np.nan)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(observed, axis=1)
        std = np.nanstd(observed, axis=1)
    mean = np.where(np.isnan(mean), values.mean(axis=1), mean)
    sigma = np.maximum(np.nan_to_num(std, nan=min_sigma), min_sigma)
    return mean.astype(np.float32), sigma.astype(np.float32)


def make_inputs(batch: WindowBatch, hp: ModelHyperparameters) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Model inputs plus the (mean, sigma) needed to bring outputs back to the original units."""
    n = len(batch.values)
    mean, sigma = window_scale(batch.values, batch.mask, hp.min_sigma)
    z = (batch.values - mean[:, None]) / sigma[:, None]
    patch_values = z.reshape(n, hp.patches, hp.patch)
    patch_mask = batch.mask.reshape(n, hp.patches, hp.patch)
    patch_minutes = batch.first_slot_minute[:, None] + np.arange(hp.patches)[None, :] * hp.patch * STEP_MINUTES
    angle = 2 * np.pi * (patch_minutes % 1440) / 1440.0
    calendar = np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    sequence = np.concatenate([patch_values, patch_mask, calendar], axis=-1).astype(np.float32)
    return {"sequence": sequence, "name_id": batch.name_ids.astype(np.int32)}, mean, sigma


def build_model(hp: ModelHyperparameters, vocabulary_size: int):  # -> keras.Model
    import keras

    keras.utils.set_random_seed(hp.seed)
    sequence = keras.Input((hp.patches, 2 * hp.patch + 2), name="sequence")
    name_id = keras.Input((), dtype="int32", name="name_id")
    encoded = keras.layers.LSTM(hp.lstm_units, name="lstm")(sequence)
    embedded = keras.layers.Embedding(vocabulary_size, hp.embedding_dim, name="name_embedding")(name_id)
    hidden = keras.layers.Concatenate()([encoded, embedded])
    hidden = keras.layers.Dense(hp.dense_units, activation="relu")(hidden)
    delta = keras.layers.Dense(hp.horizon, name="delta_forecast")(hidden)
    model = keras.Model({"sequence": sequence, "name_id": name_id}, delta, name="tauxcharge_global_lstm")
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss="mae")
    return model


@dataclass(frozen=True)
class TrainingSet:
    train: WindowBatch
    train_targets: np.ndarray  # (n, horizon), original units
    holdout: WindowBatch
    holdout_targets: np.ndarray
    holdout_cutoff: pd.Timestamp


def make_training_set(
    values: pd.DataFrame, observed: pd.DataFrame, name_ids: dict[str, int], hp: ModelHyperparameters
) -> TrainingSet:
    """Sliding windows over a cleaned history (grid x names), split in time: no holdout target leaks."""
    from tauxcharge_assets.sequences import fill_for_model

    raw = values.to_numpy(dtype=np.float32).T  # (names, T)
    filled = fill_for_model(raw)
    mask = observed.to_numpy(dtype=np.float32).T
    steps = raw.shape[1]
    if steps < hp.window + hp.horizon + 2:
        raise ValueError(f"Training needs more than {hp.window + hp.horizon} slots of history; got {steps}.")
    origins = np.arange(hp.window, steps - hp.horizon + 1, hp.sample_stride)
    cutoff = hp.window + int((steps - hp.window) * (1 - hp.holdout_fraction))
    ids = np.array([name_ids[name] for name in values.columns], dtype=np.int32)
    minute_of_day = (values.index.hour * 60 + values.index.minute).to_numpy()

    def windows(selected: np.ndarray) -> tuple[WindowBatch, np.ndarray]:
        x_index = selected[:, None] + np.arange(-hp.window, 0)[None, :]
        y_index = selected[:, None] + np.arange(hp.horizon)[None, :]
        x = filled[:, x_index].reshape(-1, hp.window)
        m = mask[:, x_index].reshape(-1, hp.window)
        y = raw[:, y_index].reshape(-1, hp.horizon)
        name_index = np.repeat(np.arange(len(ids)), len(selected))
        first_minute = np.tile(minute_of_day[selected - hp.window], len(ids))
        usable = ~np.isnan(y).any(axis=1) & (m.mean(axis=1) >= 0.5) & ~np.isnan(x).any(axis=1)
        batch = WindowBatch(x[usable], m[usable], ids[name_index[usable]], first_minute[usable])
        return batch, y[usable]

    train, train_y = windows(origins[origins + hp.horizon <= cutoff])
    holdout, holdout_y = windows(origins[origins >= cutoff])
    if len(train_y) == 0 or len(holdout_y) == 0:
        raise ValueError("Not enough usable windows to train and evaluate: load more days of history.")
    return TrainingSet(train, train_y, holdout, holdout_y, values.index[min(cutoff, steps - 1)])


def fit(training: TrainingSet, hp: ModelHyperparameters, vocabulary_size: int):
    """Train on the early part; returns (model, per-epoch loss history)."""
    model = build_model(hp, vocabulary_size)
    inputs, _mean, sigma = make_inputs(training.train, hp)
    last = training.train.values[:, -1]
    target = (training.train_targets - last[:, None]) / sigma[:, None]
    holdout_inputs, _h_mean, h_sigma = make_inputs(training.holdout, hp)
    holdout_target = (training.holdout_targets - training.holdout.values[:, -1][:, None]) / h_sigma[:, None]
    history = model.fit(
        inputs,
        target,
        validation_data=(holdout_inputs, holdout_target),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        shuffle=True,
        verbose=0,
    )
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}


def predict(model, batch: WindowBatch, hp: ModelHyperparameters, chunk: int = 8192) -> np.ndarray:
    """Forecasts in original units, shape (n, horizon); unseen name ids fall back to id 0."""
    vocabulary = model.get_layer("name_embedding").input_dim
    ids = np.where(batch.name_ids < vocabulary, batch.name_ids, 0).astype(np.int32)
    batch = WindowBatch(batch.values, batch.mask, ids, batch.first_slot_minute)
    inputs, _mean, sigma = make_inputs(batch, hp)
    outputs = []
    for start in range(0, len(ids), chunk):
        part = {key: value[start : start + chunk] for key, value in inputs.items()}
        outputs.append(np.asarray(model.predict_on_batch(part)))
    delta = np.concatenate(outputs) if outputs else np.zeros((0, hp.horizon), np.float32)
    return batch.values[:, -1][:, None] + delta * sigma[:, None]


def baseline_forecasts(batch: WindowBatch, hp: ModelHyperparameters) -> dict[str, np.ndarray]:
    """Naive: the last value for every horizon. Seasonal naive: the value 288 steps before the target."""
    naive = np.repeat(batch.values[:, -1:], hp.horizon, axis=1)
    season = WINDOW_STEPS
    seasonal = batch.values[:, hp.window - season : hp.window - season + hp.horizon]
    return {"naive": naive, "seasonal_naive": seasonal}


def evaluate(model, training: TrainingSet, hp: ModelHyperparameters) -> dict[str, float]:
    """MAE on the holdout, in the original units, for the LSTM and the baselines (h=1 and mean over h)."""
    predictions = {"lstm": predict(model, training.holdout, hp), **baseline_forecasts(training.holdout, hp)}
    metrics: dict[str, float] = {"holdout_windows": float(len(training.holdout_targets))}
    for label, forecast in predictions.items():
        errors = np.abs(forecast - training.holdout_targets)
        metrics[f"mae_h1_{label}"] = float(errors[:, 0].mean())
        metrics[f"mae_h{hp.horizon}_{label}"] = float(errors[:, -1].mean())
        metrics[f"mae_mean_{label}"] = float(errors.mean())
    return metrics
