"""The network: one global multi-series LSTM with quantile outputs, its inputs, training and inference.

Design choices, and why:
- every window is expressed relative to its last value and divided by the name's usual one-step
  change (``NameScaler``, fitted on training data only): the loss is then in "naive MAE" units, the
  quantity MASE measures, and level shifts do not move the inputs out of the training range;
- the 288 five-minute values go in as 24 hourly patches of 12 values (plus their mask and the time
  of day / day of week): the LSTM still sees all 288 values but runs 24 steps, which keeps training
  and inference for thousands of names cheap on two cores. The last hour and the same hour one day
  back also go straight to the head, where short horizons need them;
- the head outputs p10/p50/p90 for every step of the horizon (pinball loss, monotone by
  construction); intervals are then calibrated on held-out windows (conformalised quantiles);
- a name is an embedding (id 0 = a name the model never saw).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tauxcharge_assets.settings import QUANTILES, STEP_MINUTES, WINDOW_STEPS

CALENDAR_FEATURES = 4


@dataclass(frozen=True)
class ModelHyperparameters:
    window: int = WINDOW_STEPS
    patch: int = 12
    horizon: int = 12
    lstm_units: int = 48
    embedding_dim: int = 8
    dense_units: int = 64
    learning_rate: float = 3e-3
    epochs: int = 15
    batch_size: int = 256
    sample_stride: int = 3
    holdout_fraction: float = 0.2
    max_training_windows: int = 300_000
    early_stopping_patience: int = 3
    clip: float = 30.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.window % self.patch or not 0 < self.window <= WINDOW_STEPS:
            raise ValueError(
                f"window={self.window} must be a multiple of patch={self.patch} and at most {WINDOW_STEPS} "
                "(the sequences hold 24 h)."
            )
        if self.horizon < 1:
            raise ValueError(f"horizon must be at least 1 step, got {self.horizon}.")

    @property
    def patches(self) -> int:
        return self.window // self.patch

    def as_params(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class WindowBatch:
    """Windows of several names/origins, ready for ``make_inputs``."""

    values: np.ndarray  # (n, window) float32, gap-filled from the past only
    mask: np.ndarray  # (n, window) float32, 1 where the value was observed
    name_ids: np.ndarray  # (n,) int32
    scale: np.ndarray  # (n,) float32, the name's usual one-step change
    origin: np.ndarray  # (n,) datetime64[ns]: the time of the first forecast target (the slot after the window)


def calendar_features(times: np.ndarray) -> np.ndarray:
    """Time of day and day of week as sin/cos pairs, shape ``times.shape + (4,)``."""
    minutes = np.asarray(times, dtype="datetime64[m]").astype(np.int64)
    day_fraction = (minutes % 1440) / 1440.0
    week_fraction = ((minutes // 1440 + 3) % 7) / 7.0  # 1970-01-01 was a Thursday: Monday = 0
    day, week = 2 * np.pi * day_fraction, 2 * np.pi * week_fraction
    return np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=-1).astype(np.float32)


def normalise(batch: WindowBatch, hp: ModelHyperparameters) -> tuple[np.ndarray, np.ndarray]:
    """Values relative to the last one, in units of the name's usual change; returns (z, last)."""
    last = batch.values[:, -1]
    z = (batch.values - last[:, None]) / batch.scale[:, None]
    return np.clip(z, -hp.clip, hp.clip).astype(np.float32), last


def make_inputs(batch: WindowBatch, hp: ModelHyperparameters) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model inputs plus the last value of each window (outputs are relative to it)."""
    n = len(batch.values)
    z, last = normalise(batch, hp)
    mask = batch.mask.astype(np.float32)
    offsets = (hp.window - np.arange(hp.patches) * hp.patch) * STEP_MINUTES
    patch_start = batch.origin.astype("datetime64[ns]")[:, None] - offsets[None, :].astype("timedelta64[m]")
    sequence = np.concatenate(
        [z.reshape(n, hp.patches, hp.patch), mask.reshape(n, hp.patches, hp.patch), calendar_features(patch_start)],
        axis=-1,
    )
    if hp.window >= WINDOW_STEPS:  # the same slots one day before the targets
        day_back = slice(hp.window - WINDOW_STEPS, hp.window - WINDOW_STEPS + hp.horizon)
        seasonal = np.concatenate([z[:, day_back], mask[:, day_back]], axis=1)
    else:
        seasonal = np.zeros((n, 2 * hp.horizon), np.float32)
    inputs = {
        "sequence": sequence.astype(np.float32),
        "recent": np.concatenate([z[:, -hp.patch :], mask[:, -hp.patch :]], axis=1),
        "seasonal": seasonal.astype(np.float32),
        "calendar": calendar_features(batch.origin),
        "name_id": batch.name_ids.astype(np.int32),
    }
    return inputs, last


@functools.cache
def custom_objects() -> dict[str, Any]:
    """The network's own layer and loss, registered with Keras so saved models load back."""
    import keras

    @keras.saving.register_keras_serializable(package="tauxcharge")
    class MonotoneQuantiles(keras.layers.Layer):
        """p10 <= p50 <= p90 by construction: the outer quantiles are the median -/+ a softplus."""

        def call(self, raw):  # (n, horizon, 3)
            median = raw[..., 1]
            lower = median - keras.ops.softplus(raw[..., 0])
            upper = median + keras.ops.softplus(raw[..., 2])
            return keras.ops.stack([lower, median, upper], axis=-1)

    @keras.saving.register_keras_serializable(package="tauxcharge")
    class PinballLoss(keras.losses.Loss):
        """Mean quantile (pinball) loss over p10/p50/p90; targets have shape (n, horizon, 1)."""

        def __init__(self, quantiles: tuple[float, ...] = QUANTILES, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.quantiles = tuple(float(q) for q in quantiles)

        def call(self, y_true, y_pred):
            q = keras.ops.convert_to_tensor(self.quantiles, dtype=y_pred.dtype)
            error = y_true - y_pred
            return keras.ops.mean(keras.ops.maximum(q * error, (q - 1.0) * error), axis=-1)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "quantiles": list(self.quantiles)}

    return {"MonotoneQuantiles": MonotoneQuantiles, "PinballLoss": PinballLoss}


def build_model(hp: ModelHyperparameters, vocabulary_size: int):  # -> keras.Model
    import keras

    objects = custom_objects()
    keras.utils.set_random_seed(hp.seed)
    inputs = {
        "sequence": keras.Input((hp.patches, 2 * hp.patch + CALENDAR_FEATURES), name="sequence"),
        "recent": keras.Input((2 * hp.patch,), name="recent"),
        "seasonal": keras.Input((2 * hp.horizon,), name="seasonal"),
        "calendar": keras.Input((CALENDAR_FEATURES,), name="calendar"),
        "name_id": keras.Input((), dtype="int32", name="name_id"),
    }
    encoded = keras.layers.LSTM(hp.lstm_units, name="lstm")(inputs["sequence"])
    embedded = keras.layers.Embedding(vocabulary_size, hp.embedding_dim, name="name_embedding")(inputs["name_id"])
    hidden = keras.layers.Concatenate()([encoded, embedded, inputs["recent"], inputs["seasonal"], inputs["calendar"]])
    hidden = keras.layers.Dense(hp.dense_units, activation="relu")(hidden)
    hidden = keras.layers.Dense(hp.dense_units, activation="relu")(hidden)
    raw = keras.layers.Reshape((hp.horizon, len(QUANTILES)))(keras.layers.Dense(hp.horizon * len(QUANTILES))(hidden))
    quantiles = objects["MonotoneQuantiles"](name="quantiles")(raw)
    model = keras.Model(inputs, quantiles, name="tauxcharge_global_lstm")
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss=objects["PinballLoss"]())
    return model


def targets_in_scale(batch: WindowBatch, targets: np.ndarray, hp: ModelHyperparameters) -> np.ndarray:
    """Targets in the network's units (relative to the last value, over the scale), shape (n, horizon, 1)."""
    z = (targets - batch.values[:, -1][:, None]) / batch.scale[:, None]
    return np.clip(z, -hp.clip, hp.clip)[..., None].astype(np.float32)


def fit(
    train: WindowBatch,
    train_targets: np.ndarray,
    validation: WindowBatch,
    validation_targets: np.ndarray,
    hp: ModelHyperparameters,
    vocabulary_size: int,
    callbacks: list[Any] | None = None,
):
    """Train with early stopping on the later validation windows; returns (network, loss history).

    ``callbacks`` are extra Keras callbacks (the command line's epoch progress bar).
    """
    import keras

    network = build_model(hp, vocabulary_size)
    inputs, _ = make_inputs(train, hp)
    validation_inputs, _ = make_inputs(validation, hp)
    stop = keras.callbacks.EarlyStopping(patience=hp.early_stopping_patience, restore_best_weights=True)
    history = network.fit(
        inputs,
        targets_in_scale(train, train_targets, hp),
        validation_data=(validation_inputs, targets_in_scale(validation, validation_targets, hp)),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        shuffle=True,
        callbacks=[stop, *(callbacks or [])],
        verbose=0,
    )
    return network, {key: [float(v) for v in values] for key, values in history.history.items()}


def vocabulary_size(network) -> int:
    """Names the network knows (its embedding rows), for Keras and ``numpy_network`` alike."""
    size = getattr(network, "vocabulary_size", None)
    return int(size) if size is not None else int(network.get_layer("name_embedding").input_dim)


def predict_scaled(network, batch: WindowBatch, hp: ModelHyperparameters, chunk: int = 16384) -> np.ndarray:
    """Raw network quantiles in scaled units, (n, horizon, 3); ids the network never saw map to 0."""
    vocabulary = vocabulary_size(network)
    ids = np.where((batch.name_ids >= 0) & (batch.name_ids < vocabulary), batch.name_ids, 0).astype(np.int32)
    inputs, _ = make_inputs(WindowBatch(batch.values, batch.mask, ids, batch.scale, batch.origin), hp)
    outputs = [
        np.asarray(network.predict_on_batch({k: v[start : start + chunk] for k, v in inputs.items()}))
        for start in range(0, len(ids), chunk)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, hp.horizon, len(QUANTILES)), np.float32)


def conformal_adjustment(scaled: np.ndarray, scaled_targets: np.ndarray, coverage: float = 0.8) -> np.ndarray:
    """Per-horizon widening (or narrowing) of [p10, p90] so that held-out coverage is ``coverage``.

    Conformalised quantile regression: the conformity score is how far the target falls outside the
    interval (negative inside); its finite-sample-corrected quantile is added on both sides.
    """
    y = scaled_targets[..., 0]
    outside = np.maximum(scaled[..., 0] - y, y - scaled[..., 2])  # (n, horizon)
    n = len(outside)
    if n == 0:
        return np.zeros(scaled.shape[1], np.float32)
    level = min(1.0, np.ceil((n + 1) * coverage) / n)
    return np.quantile(outside, level, axis=0).astype(np.float32)


def apply_adjustment(scaled: np.ndarray, adjustment: np.ndarray) -> np.ndarray:
    lower = np.minimum(scaled[..., 0] - adjustment, scaled[..., 1])
    upper = np.maximum(scaled[..., 2] + adjustment, scaled[..., 1])
    return np.stack([lower, scaled[..., 1], upper], axis=-1)


def to_original_units(scaled: np.ndarray, batch: WindowBatch) -> np.ndarray:
    return batch.values[:, -1][:, None, None] + scaled * batch.scale[:, None, None]
