"""A trained forecaster: the network plus what it needs around it (per-name scales, interval calibration).

Everything here works on plain arrays of series that may start at different times and have gaps
(NaN), so the same code trains on the Elasticsearch history, on the NAB files and in the backtests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tauxcharge_assets.model import network as network_module
from tauxcharge_assets.model.network import ModelHyperparameters, WindowBatch
from tauxcharge_assets.settings import QUANTILES, STEP_MINUTES, WINDOW_STEPS

# A window with fewer observed points than this is out of what the network learned from: training keeps
# only windows at least half observed (``make_training_set``), so the tick gives such names the naive
# fallback (``naive_quantiles``) instead of an LSTM forecast from mostly gap-filled values.
MIN_OBSERVED_FRACTION = 0.5
LSTM, NAIVE = "lstm", "naive"  # the ``method`` of a forecast document
_Z80 = 1.2816  # the 90th percentile of the standard normal: an 80 % interval is p50 +- 1.2816 sd


def one_step_scale(values: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive observed slots (the in-sample naive MAE), per row."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as silence:
        silence.filter(RuntimeWarning)
        return np.nanmean(np.abs(np.diff(values, axis=1)), axis=1)


def robust_floor(scale: np.ndarray, level: np.ndarray) -> np.ndarray:
    """A flat series has no usual change: keep the scale above a tiny fraction of its level."""
    floor = 1e-3 * np.maximum(np.abs(np.nan_to_num(level, nan=1.0)), 1.0)
    scale = np.where(np.isfinite(scale), scale, floor)
    return np.maximum(scale, floor).astype(np.float32)


class NameScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Each name's usual one-step change, fitted on training data only; unseen names use their window.

    A scikit-learn transformer over a wide frame (slots x names, NaN = missing), so it is fitted,
    cloned and pickled like any other. ``fit`` learns ``scales_`` (name -> float); ``transform``
    divides each column by its name's scale. The network itself gets raw windows plus a per-window
    scale from ``for_windows`` and normalises inside its graph, relative to each window's last value;
    that is why the training windows are not a ``Pipeline`` step after ``transform``:

    * pre-dividing rounds differently in float32 (``x/s - l/s`` is not ``(x - l)/s``), so the training
      results and forecasts would change, and the tick feeds raw tensors from Elasticsearch;
    * a name the model never saw takes its own window's scale, which is known per window, not per column;
    * the scales come from the training part of each series while the windows cover all of it
      (the validation tail too), and ``Pipeline.fit_transform`` fits and transforms the same rows.
    """

    scales_: dict[str, float]
    feature_names_in_: np.ndarray
    n_features_in_: int

    def fit(self, frame: pd.DataFrame, y: None = None) -> NameScaler:
        """Scale of each column: its mean absolute one-step change, floored by ``robust_floor``.

        Trailing NaN (``wide_frame`` pads shorter series) are ignored, like any other gap.
        """
        frame = _names_frame(frame)
        scales: dict[str, float] = {}
        for name in frame.columns:
            values = frame[name].to_numpy(np.float64)
            level = np.nanmedian(values) if np.isfinite(values).any() else 1.0
            scales[str(name)] = float(robust_floor(one_step_scale(values), np.array([level]))[0])
        return self._set_scales(scales)

    @classmethod
    def from_scales(cls, scales: Mapping[str, float]) -> NameScaler:
        """A fitted scaler from stored scales (the registry's ``name_scales.json``)."""
        return cls()._set_scales({str(name): float(scale) for name, scale in scales.items()})

    def _set_scales(self, scales: dict[str, float]) -> NameScaler:
        self.scales_ = scales
        self.feature_names_in_ = np.asarray(list(scales), dtype=object)
        self.n_features_in_ = len(scales)
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each column over its name's scale (names unseen in ``fit`` are refused: see ``for_windows``)."""
        frame = _names_frame(frame)
        return frame / self._column_scales(frame)

    def inverse_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = _names_frame(frame)
        return frame * self._column_scales(frame)

    def _column_scales(self, frame: pd.DataFrame) -> pd.Series:
        check_is_fitted(self)
        unseen = [str(name) for name in frame.columns if str(name) not in self.scales_]
        if unseen:
            raise ValueError(
                f"{len(unseen)} name(s) not seen in fit, e.g. {unseen[:3]}; "
                "for_windows gives them their window's own scale."
            )
        return pd.Series([self.scales_[str(name)] for name in frame.columns], index=frame.columns)

    def for_windows(self, names: Sequence[str], windows: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(n,) float32 scale of each window: its name's, or for an unseen name the window's own."""
        check_is_fitted(self)
        observed = np.where(masks > 0, windows, np.nan)
        known = np.array([self.scales_.get(name, np.nan) for name in names], dtype=np.float64)
        missing = np.isnan(known)
        if missing.any():
            with np.errstate(all="ignore"), np.testing.suppress_warnings() as silence:
                silence.filter(RuntimeWarning)
                level = np.nanmedian(observed[missing], axis=1)
            known[missing] = robust_floor(one_step_scale(observed[missing]), level)
        return known.astype(np.float32)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Detector models pickled before this was a scikit-learn transformer stored a plain ``scales``."""
        if "scales" in state and "scales_" not in state:
            state = dict(NameScaler.from_scales(state["scales"]).__dict__)
        super().__setstate__(state)


def _names_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The names are the features: a frame with one column per name (``wide_frame`` builds one)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"NameScaler takes a wide DataFrame (slots x names), not {type(frame).__name__}.")
    if not frame.columns.is_unique:
        raise ValueError("NameScaler needs one column per name; the frame repeats some.")
    return frame


def wide_frame(series: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Series of different lengths as one frame (slots x names), the shorter ones NaN-padded at the end."""
    arrays = {str(name): np.asarray(values) for name, values in series.items()}
    rows = max((len(values) for values in arrays.values()), default=0)
    dtype = np.result_type(np.float32, *(values.dtype for values in arrays.values()))
    table = np.full((rows, len(arrays)), np.nan, dtype=dtype)
    for column, values in enumerate(arrays.values()):
        table[: len(values), column] = values
    return pd.DataFrame(table, columns=list(arrays))


@dataclass(frozen=True)
class SeriesData:
    """One name's values on the 5-minute grid from ``start`` (NaN = missing)."""

    name: str
    name_id: int
    values: np.ndarray
    start: pd.Timestamp


def series_from_frame(values: pd.DataFrame, name_ids: Mapping[str, int]) -> list[SeriesData]:
    start = pd.Timestamp(values.index[0])
    return [
        SeriesData(str(name), int(name_ids.get(str(name), 0)), values[name].to_numpy(np.float32), start)
        for name in values.columns
    ]


def past_filled(values: np.ndarray) -> np.ndarray:
    """Carry the last observed value forward; never looks ahead."""
    return pd.Series(values, dtype="float32").ffill().to_numpy(np.float32)


def windows(
    series: SeriesData,
    origins: np.ndarray,
    hp: ModelHyperparameters,
    scaler: NameScaler,
    filled: np.ndarray | None = None,
) -> tuple[WindowBatch, np.ndarray]:
    """The ``hp.window`` slots before each origin (left-padded at the series start) and the targets after it."""
    origins = np.asarray(origins, dtype=np.int64)
    raw = np.asarray(series.values, dtype=np.float32)
    filled = past_filled(raw) if filled is None else filled
    index = origins[:, None] + np.arange(-hp.window, 0)[None, :]
    inside = index >= 0
    safe = np.clip(index, 0, len(raw) - 1)
    x = np.where(inside, filled[safe], np.nan)
    mask = (inside & ~np.isnan(raw[safe])).astype(np.float32)
    x = fill_leading(x)
    target_index = origins[:, None] + np.arange(hp.horizon)[None, :]
    targets = np.where(target_index < len(raw), raw[np.clip(target_index, 0, len(raw) - 1)], np.nan)
    origin_times = naive_utc(series.start) + origins.astype("timedelta64[m]") * STEP_MINUTES
    scale = scaler.for_windows([series.name] * len(origins), x, mask)
    ids = np.full(len(origins), series.name_id, np.int32)
    return WindowBatch(x.astype(np.float32), mask, ids, scale, origin_times), targets.astype(np.float32)


def naive_utc(stamp: pd.Timestamp) -> np.datetime64:
    stamp = pd.Timestamp(stamp)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return np.datetime64(stamp, "ns")


def fill_leading(x: np.ndarray) -> np.ndarray:
    """Slots before a window's first observed value take that value (inside the window: still causal)."""
    rows = np.isnan(x).any(axis=1)
    if rows.any():
        x = x.copy()
        x[rows] = pd.DataFrame(x[rows]).bfill(axis=1).fillna(0.0).to_numpy(np.float32)
    return x


def concat_batches(parts: Sequence[WindowBatch]) -> WindowBatch:
    return WindowBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in WindowBatch.__dataclass_fields__))


def take(batch: WindowBatch, selected: np.ndarray) -> WindowBatch:
    return WindowBatch(*(getattr(batch, f)[selected] for f in WindowBatch.__dataclass_fields__))


@dataclass(frozen=True)
class TrainingSet:
    train: WindowBatch
    train_targets: np.ndarray
    validation: WindowBatch
    validation_targets: np.ndarray


def make_training_set(series: Sequence[SeriesData], scaler: NameScaler, hp: ModelHyperparameters) -> TrainingSet:
    """Windows every ``sample_stride`` slots; the last ``holdout_fraction`` of each series validates.

    Origins are sampled before any window is built, so 1,000 names x 28 days stays within memory:
    at most ``max_training_windows`` training and a quarter of that validation windows.
    """
    candidates = []
    for item in series:
        length = len(item.values)
        cutoff = int(length * (1 - hp.holdout_fraction))
        origins = np.arange(min(hp.window // 2, cutoff), length - hp.horizon + 1, hp.sample_stride)
        candidates.append((origins[origins + hp.horizon <= cutoff], origins[origins >= cutoff]))
    rng = np.random.default_rng(hp.seed)
    keep_train = min(1.0, hp.max_training_windows / max(sum(len(t) for t, _ in candidates), 1))
    keep_validation = min(1.0, hp.max_training_windows / 4 / max(sum(len(v) for _, v in candidates), 1))
    parts: dict[str, list[tuple[WindowBatch, np.ndarray]]] = {"train": [], "validation": []}
    for item, (train_origins, validation_origins) in zip(series, candidates, strict=True):
        for part, origins, keep in (
            ("train", train_origins, keep_train),
            ("validation", validation_origins, keep_validation),
        ):
            if keep < 1.0:
                origins = origins[rng.random(len(origins)) < keep]
            batch, targets = windows(item, origins, hp, scaler)
            usable = ~np.isnan(targets).any(axis=1) & (batch.mask.mean(axis=1) >= MIN_OBSERVED_FRACTION)
            parts[part].append((take(batch, usable), targets[usable]))
    train = concat_batches([b for b, _ in parts["train"]])
    train_targets = np.concatenate([t for _, t in parts["train"]])
    validation = concat_batches([b for b, _ in parts["validation"]])
    validation_targets = np.concatenate([t for _, t in parts["validation"]])
    if len(train_targets) == 0 or len(validation_targets) == 0:
        raise ValueError(
            f"Not enough usable windows to train and validate ({len(train_targets)} / {len(validation_targets)}): "
            f"each series needs well over {hp.horizon} slots with at least half of every window observed; "
            "load more history."
        )
    return TrainingSet(train, train_targets, validation, validation_targets)


@dataclass
class ForecastModel:
    """The network with its scaler and calibration: what MLflow stores and the forecasts load."""

    network: Any
    hp: ModelHyperparameters
    scaler: NameScaler
    interval_adjustment: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)
    validation_coverage: float = float("nan")
    # The name -> id mapping it was trained with: the served model has no names index to ask (a name
    # missing here gets ``UNKNOWN_NAME_ID``, the embedding every id beyond the vocabulary falls back to).
    name_ids: dict[str, int] = field(default_factory=dict)

    def predict_quantiles(self, batch: WindowBatch) -> np.ndarray:
        """(n, horizon, 3) p10/p50/p90 in the original units."""
        scaled = network_module.predict_scaled(self.network, batch, self.hp)
        return network_module.to_original_units(
            network_module.apply_adjustment(scaled, self.interval_adjustment), batch
        )

    def batch_for(
        self, names: Sequence[str], name_ids: np.ndarray, values: np.ndarray, mask: np.ndarray, origin: pd.Timestamp
    ) -> WindowBatch:
        """A batch from the tick's sequence tensors (the last ``hp.window`` of their slots)."""
        values, mask = values[:, -self.hp.window :], mask[:, -self.hp.window :]
        origin64 = naive_utc(origin)
        return WindowBatch(
            values.astype(np.float32),
            mask.astype(np.float32),
            np.asarray(name_ids, np.int32),
            self.scaler.for_windows(names, values, mask),
            np.full(len(names), origin64),
        )

    def check_usable(self) -> None:
        """Raise ``ValueError`` (saying what does not fit) unless this model can forecast the tick's tensors.

        A stored version whose weights do not match its hyperparameters (another input width, window,
        horizon or number of quantiles) would otherwise fail deep in a matrix product, or worse, reshape
        into a wrong horizon silently: a probe batch of two windows must give (2, horizon, 3) finite values.
        """
        hp = self.hp
        if np.shape(self.interval_adjustment) != (hp.horizon,):
            raise ValueError(
                f"its interval calibration has shape {np.shape(self.interval_adjustment)}, not ({hp.horizon},) "
                f"for its horizon of {hp.horizon} steps"
            )
        probe = np.linspace(40.0, 60.0, 2 * WINDOW_STEPS, dtype=np.float32).reshape(2, WINDOW_STEPS)
        batch = self.batch_for(["probe-a", "probe-b"], np.zeros(2, np.int32), probe, np.ones_like(probe),
                               pd.Timestamp("2026-01-05", tz="UTC"))  # fmt: skip
        try:
            scaled = np.asarray(network_module.predict_scaled(self.network, batch, hp))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"its network does not take the inputs of its hyperparameters (window {hp.window}, patch {hp.patch}, "
                f"horizon {hp.horizon}): {error}"
            ) from error
        expected = (2, hp.horizon, len(QUANTILES))
        if scaled.shape != expected:
            raise ValueError(
                f"its network gives forecasts of shape {scaled.shape[1:]}, not {expected[1:]} (horizon x p10/p50/p90)"
            )
        if not np.isfinite(self.predict_quantiles(batch)).all():
            raise ValueError("its network gives non-finite forecasts on a plain window")

    def forecast_tick(
        self, names: Sequence[str], name_ids: np.ndarray, values: np.ndarray, mask: np.ndarray, origin: pd.Timestamp
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, horizon, 3) quantiles and (n,) method of every name: the LSTM's, or the naive fallback for a
        window less than ``MIN_OBSERVED_FRACTION`` observed (vectorised: one network batch, one fallback batch)."""
        batch = self.batch_for(names, name_ids, values, mask, origin)
        sparse = batch.mask.mean(axis=1) < MIN_OBSERVED_FRACTION
        quantiles = np.empty((len(names), self.hp.horizon, len(QUANTILES)), np.float32)
        if (~sparse).any():
            quantiles[~sparse] = self.predict_quantiles(take(batch, ~sparse))
        if sparse.any():
            known = np.array([name in self.scaler.scales_ for name in np.asarray(names, dtype=object)[sparse]])
            quantiles[sparse] = naive_quantiles(take(batch, sparse), known, self.typical_scale(), self.hp.horizon)
        return quantiles, np.where(sparse, NAIVE, LSTM)

    def unseen_count(self, names: Sequence[str]) -> int:
        """Names without a stored scale: the model never saw them (``names_unseen_by_model``)."""
        return sum(name not in self.scaler.scales_ for name in names)

    def typical_scale(self) -> float:
        """The median usual change of the names the model knows (1.0 when it knows none)."""
        scales = np.array(list(self.scaler.scales_.values()), dtype=np.float64)
        scales = scales[np.isfinite(scales) & (scales > 0)]
        return float(np.median(scales)) if len(scales) else 1.0


def naive_quantiles(batch: WindowBatch, known: np.ndarray, typical_scale: float, horizon: int) -> np.ndarray:
    """The fallback: the last observed value, with a random walk's 80 % interval, (n, horizon, 3).

    The step's spread comes from the name's usual one-step change (mean |change| = sd x sqrt(2 / pi) for a
    Gaussian step): the stored one for a name the model knows; for a new name its own window's when it has
    two consecutive points, else the known names' median (a handful of points says nothing about spread).
    """
    scale = batch.scale.astype(np.float64)
    own = one_step_scale(np.where(batch.mask > 0, batch.values, np.nan))
    unknown = ~np.asarray(known, dtype=bool)
    scale[unknown] = np.where(np.isfinite(own[unknown]) & (own[unknown] > 0), own[unknown], typical_scale)
    half = _Z80 * (scale * np.sqrt(np.pi / 2))[:, None] * np.sqrt(np.arange(1, horizon + 1))[None, :]
    last = batch.values[:, -1].astype(np.float64)[:, None]  # gap-filled forward: the last observed value
    median = np.broadcast_to(last, half.shape)
    return np.stack([median - half, median, median + half], axis=-1).astype(np.float32)


def train_forecast_model(
    series: Sequence[SeriesData],
    hp: ModelHyperparameters,
    vocabulary_size: int,
    callbacks: list[Any] | None = None,
) -> ForecastModel:
    """Scales from the training part only, fit, then calibrate the 80 % interval on the validation windows.

    ``callbacks`` are extra Keras callbacks for the fit (the command line's epoch progress bar).
    """
    scaler = NameScaler().fit(
        wide_frame({item.name: item.values[: int(len(item.values) * (1 - hp.holdout_fraction))] for item in series})
    )
    training = make_training_set(series, scaler, hp)
    network, history = network_module.fit(
        training.train,
        training.train_targets,
        training.validation,
        training.validation_targets,
        hp,
        vocabulary_size,
        callbacks,
    )
    scaled = network_module.predict_scaled(network, training.validation, hp)
    scaled_targets = network_module.targets_in_scale(training.validation, training.validation_targets, hp)
    adjustment = network_module.conformal_adjustment(scaled, scaled_targets)
    adjusted = network_module.apply_adjustment(scaled, adjustment)
    y = scaled_targets[..., 0]
    coverage = float(((adjusted[..., 0] <= y) & (y <= adjusted[..., 2])).mean())
    name_ids = {item.name: int(item.name_id) for item in series}
    return ForecastModel(network, hp, scaler, adjustment, history, coverage, name_ids)


class LstmForecaster:
    """The backtest's view of a forecast model (``backtest.Forecaster``): trains on ``fit`` unless given one."""

    def __init__(
        self,
        hp: ModelHyperparameters,
        start_times: Mapping[str, pd.Timestamp] | None = None,
        fitted: ForecastModel | None = None,
        name_ids: Mapping[str, int] | None = None,
        name: str = "lstm",
    ) -> None:
        self.name = name
        self.hp = hp
        self.start_times = dict(start_times or {})
        self.fitted = fitted
        self.name_ids = dict(name_ids or {})

    def _start(self, series: str) -> pd.Timestamp:
        return self.start_times.get(series, pd.Timestamp("2026-01-05", tz="UTC"))

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        if self.fitted is not None:
            return
        if not self.name_ids:
            self.name_ids = {name: i + 1 for i, name in enumerate(sorted(train))}
        data = [
            SeriesData(name, self.name_ids.get(name, 0), np.asarray(values, np.float32), self._start(name))
            for name, values in train.items()
        ]
        self.fitted = train_forecast_model(data, self.hp, max(self.name_ids.values(), default=0) + 1)

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        if self.fitted is None:
            raise RuntimeError("LstmForecaster.forecast called before fit.")
        if horizon > self.fitted.hp.horizon:
            raise ValueError(f"the model forecasts {self.fitted.hp.horizon} steps; {horizon} were asked for.")
        item = SeriesData(series, self.name_ids.get(series, 0), np.asarray(values, np.float32), self._start(series))
        origins = np.asarray(origins, dtype=np.int64)
        # Only values before the last origin are ever read: the windows stop at each origin.
        item = SeriesData(item.name, item.name_id, item.values[: int(origins.max(initial=0))], item.start)
        batch, _ = windows(item, origins, self.fitted.hp, self.fitted.scaler)
        return self.fitted.predict_quantiles(batch)[:, :horizon, :]
