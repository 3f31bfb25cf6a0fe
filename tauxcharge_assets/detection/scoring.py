"""Anomaly scores in [0, 1] from actual values and their forecast distributions.

The same functions score the 5-minute ticks (``anomaly_report``) and labelled files (the ``detect``
command), so what the benchmark measures is what runs in production.

``score_series`` (the detector) gathers four kinds of evidence per slot, each a non-negative size:

* forecast surprise: ``|z|``, the actual value standardised against the p10/p50/p90 forecast made
  for it one step before (``standardised_residuals``) - catches spikes the model did not expect;
* residual level: how far the mean forecast error of the last ``level_window`` slots sits from its
  median over the ``baseline_window`` before - a lasting shift the one-step forecast chases;
* value level: the same on the raw values - a level shift on series the model forecasts poorly;
* variance change: ``|log|`` of the ratio between the recent spread of one-slot changes and its
  usual value - flat lines (a stuck collector) and bursts of noise.

Sizes in different units and on names of very different roughness are made comparable by a *record
ratio*: each evidence divided by its own maximum over the previous ``record_window`` slots, so 1 means
"as unusual as the most unusual moment of the last day" whatever the name or the unit. The detector
reports the geometric mean of the two largest ratios (one noisy source alone rarely fires), mapped to
``r / (1 + r)``: 0.5 is a tie with the record, and values never saturate at 1.0, so a single threshold
ranks every name. Operators and NAB both want one alarm per episode, early: a slot keeps its score only
when it beats every raw score of the previous ``alarm_window`` slots, otherwise it reports 0.

Every score at slot t uses values up to t only; all functions work on (slots x names) arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import bottleneck as bn
import numpy as np
from scipy.special import ndtri

Z90 = 1.2815515655446004


@dataclass(frozen=True)
class ScoringConfig:
    """Thresholds and windows (in slots); the ``score_series`` defaults were chosen on the simulator's labels."""

    min_history: int = 12
    max_abs_z: float = 50.0
    warning_score: float = 0.6
    critical_score: float = 0.8
    level_window: int = 6  # slots averaged before comparing with the baseline: a level shift, not one spike
    baseline_window: int = 288  # the usual level / spread: one day
    record_window: int = 288  # evidence is divided by its maximum over the previous day
    alarm_window: int = 36  # one alarm per 3 h episode: a slot must beat the raw scores of these slots
    max_ratio: float = 1000.0  # record ratio where the previous record was 0 (a flat series that moves)

    def __post_init__(self) -> None:
        if not 0 < self.warning_score <= self.critical_score <= 1:
            raise ValueError(
                f"need 0 < warning_score <= critical_score <= 1, got {self.warning_score} and {self.critical_score}."
            )
        windows = min(self.baseline_window, self.record_window)
        if self.min_history < 2 or self.level_window < 2 or windows < self.min_history:
            raise ValueError(
                "need min_history >= 2, level_window >= 2 and baseline_window, record_window >= min_history, got "
                f"{self.level_window}, {self.baseline_window}, {self.record_window}, {self.min_history}."
            )
        if self.alarm_window < 0 or self.max_ratio <= 1:
            raise ValueError(f"need alarm_window >= 0 and max_ratio > 1, got {self.alarm_window}, {self.max_ratio}.")


def standardised_residuals(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """Residual over the forecast's own spread on its side, in standard-normal units."""
    residual = np.asarray(actual, dtype=np.float64) - p50
    upper = np.asarray(p90, dtype=np.float64) - p50
    lower = p50 - np.asarray(p10, dtype=np.float64)
    half_width = np.where(residual >= 0, upper, lower)
    tiny = 1e-9 * np.maximum(np.abs(p50), 1.0)
    return residual / np.maximum(half_width, tiny) * Z90


EVIDENCE = ("forecast", "residual_level", "value_level", "variance")


@dataclass(frozen=True)
class SeriesScores:
    """``score_series`` output, all (slots x names): ``score`` is the sparse alarm, ``raw_score`` before it."""

    evidence: dict[str, np.ndarray]  # size of each kind of evidence (EVIDENCE), in its own unit
    ratio: dict[str, np.ndarray]  # each evidence over its record of the previous ``record_window`` slots
    combined_ratio: np.ndarray  # geometric mean of the two largest ratios
    raw_score: np.ndarray  # combined_ratio / (1 + combined_ratio)
    score: np.ndarray  # raw_score where it beats the previous ``alarm_window`` raw scores, else 0; NaN if missing

    def strongest(self) -> np.ndarray:
        """Name of the evidence with the largest ratio per slot, for the report's reason."""
        stacked = np.stack([np.nan_to_num(self.ratio[k]) for k in EVIDENCE])
        return np.asarray(EVIDENCE)[np.argmax(stacked, axis=0)]


def _matrix(values: np.ndarray) -> np.ndarray:
    """(slots x names) float64; a 1-D series becomes one column."""
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


# Moving statistics along the slot axis for every name at once. bottleneck runs one C loop per call
# where pandas' ``DataFrame.rolling`` pays a Python call per column (120,000 of them per tick at
# 10,000 names); both skip NaN and need ``min_count`` observations, so the results are the same.


def _shift(values: np.ndarray, slots: int) -> np.ndarray:
    """``values`` moved ``slots`` later; the first rows become NaN (``DataFrame.shift``)."""
    out = np.full_like(values, np.nan)
    if slots < len(values):
        out[slots:] = values[: len(values) - slots]
    return out


def _moving(function: Callable[..., np.ndarray], values: np.ndarray, window: int, min_count: int) -> np.ndarray:
    """A bottleneck moving-window ``function`` over slots; a window longer than the data is the whole past."""
    if len(values) == 0:
        return values.copy()
    window = min(window, len(values))
    return function(values, window, min_count=min(min_count, window), axis=0)


def _moving_std(values: np.ndarray, window: int, min_count: int) -> np.ndarray:
    """Sample std (ddof 1); exactly 0 where the window's observed values are all equal (a flat line)."""
    spread = _moving(partial(bn.move_std, ddof=1), values, window, min_count)
    flat = _moving(bn.move_max, values, window, 1) == _moving(bn.move_min, values, window, 1)
    return np.where(flat & ~np.isnan(spread), 0.0, spread)


def _level_shift(values: np.ndarray, config: ScoringConfig) -> np.ndarray:
    """|recent mean - usual median|; the baseline stops where the recent window starts."""
    recent = _moving(bn.move_mean, values, config.level_window, 1)
    usual = _moving(bn.move_median, _shift(values, config.level_window), config.baseline_window, config.min_history)
    return np.abs(recent - usual)


def _variance_change(values: np.ndarray, config: ScoringConfig) -> np.ndarray:
    """|log(recent spread of changes / usual spread)|; a tiny floor keeps flat names finite."""
    spread = _moving_std(values - _shift(values, 1), config.level_window, 2)
    usual = _moving(bn.move_median, _shift(spread, config.level_window), config.baseline_window, config.min_history)
    level = _moving(bn.move_median, _shift(np.abs(values), 1), config.baseline_window, 1)
    floor = 1e-6 * (np.nan_to_num(level, nan=0.0) + 1e-9)
    return np.abs(np.log((spread + floor) / (usual + floor)))


def calibrated_record(slots: int) -> float:
    """Median of the largest of ``slots`` values of |N(0, 1)|: the forecast surprise's record under a
    calibrated interval (3.04 for a day of 288 slots), used until a name has a record of its own."""
    return float(ndtri((1.0 + 0.5 ** (1.0 / slots)) / 2.0))


def _record_ratio(evidence: np.ndarray, config: ScoringConfig, prior: float | None = None) -> np.ndarray:
    """Evidence over its maximum of the previous ``record_window`` slots (``min_history`` of them needed).

    Without a record yet, ``prior`` stands in when given (the forecast surprise, in standard-normal
    units, has one); otherwise, and over a record of 0 (a flat series that moves), any evidence is a
    new record: ``max_ratio``.
    """
    record = _moving(bn.move_max, _shift(evidence, 1), config.record_window, config.min_history)
    if prior is not None:
        record = np.where(np.isnan(record), prior, record)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(record > 0, evidence / record, np.where(evidence > 0, config.max_ratio, 0.0))
    return np.nan_to_num(np.minimum(ratio, config.max_ratio), nan=0.0)


def _two_largest(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise largest and second largest (a sort along a stacked axis is ~50x slower)."""
    largest, second = np.maximum(arrays[0], arrays[1]), np.minimum(arrays[0], arrays[1])
    for array in arrays[2:]:
        second = np.maximum(second, np.minimum(largest, array))
        largest = np.maximum(largest, array)
    return largest, second


def score_series(
    actual: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    config: ScoringConfig = ScoringConfig(),
    last_slots: int | None = None,
    names_per_block: int = 1024,
) -> SeriesScores:
    """The detector (see the module docstring): causal scores of (slots x names) or 1-D arrays.

    ``last_slots`` keeps only the newest rows of every output (a tick scores one slot). Names are
    scored in blocks of ``names_per_block``: the temporaries stay in cache and the peak memory of a
    10,000-name tick stays a few MiB instead of ~800 MiB.
    """
    values, lows, mids, highs = (_matrix(a) for a in (actual, p10, p50, p90))
    keep = len(values) if last_slots is None else min(last_slots, len(values))
    blocks = [
        _score_block(values[:, i : i + names_per_block], lows[:, i : i + names_per_block],
                     mids[:, i : i + names_per_block], highs[:, i : i + names_per_block], config, keep)
        for i in range(0, max(values.shape[1], 1), names_per_block)
    ]  # fmt: skip
    if len(blocks) == 1:
        return blocks[0]

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays, axis=1)

    return SeriesScores(
        {k: joined([b.evidence[k] for b in blocks]) for k in EVIDENCE},
        {k: joined([b.ratio[k] for b in blocks]) for k in EVIDENCE},
        joined([b.combined_ratio for b in blocks]),
        joined([b.raw_score for b in blocks]),
        joined([b.score for b in blocks]),
    )


def _score_block(
    values: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, config: ScoringConfig, keep: int
) -> SeriesScores:
    missing = np.isnan(values)
    z = standardised_residuals(values, p10, p50, p90)
    with np.errstate(invalid="ignore", divide="ignore"):
        evidence = {
            "forecast": np.minimum(np.abs(z), config.max_abs_z),
            "residual_level": _level_shift(values - p50, config),
            "value_level": _level_shift(values, config),
            "variance": _variance_change(values, config),
        }
    # The first ticks after a deployment have no forecast errors on record: a calibrated one stands in,
    # or every name would raise an alarm on its first slightly-off forecast.
    priors = {"forecast": calibrated_record(config.record_window)}
    ratio = {name: _record_ratio(array, config, priors.get(name)) for name, array in evidence.items()}
    largest, second = _two_largest([np.maximum(array, 1e-12) for array in ratio.values()])
    combined = np.sqrt(largest * second)
    raw = combined / (1.0 + combined)
    if config.alarm_window:
        previous = np.nan_to_num(_moving(bn.move_max, _shift(raw, 1), config.alarm_window, 1), nan=0.0)
        score = np.where(raw > previous, raw, 0.0)
    else:
        score = raw.copy()
    score = np.where(missing, np.nan, score)
    rows = slice(len(values) - keep, len(values))
    return SeriesScores(
        {k: v[rows] for k, v in evidence.items()},
        {k: v[rows] for k, v in ratio.items()},
        combined[rows],
        raw[rows],
        score[rows],
    )


def severity(score: np.ndarray, config: ScoringConfig = ScoringConfig()) -> np.ndarray:
    return np.select(
        [score >= config.critical_score, score >= config.warning_score], ["critical", "warning"], default="normal"
    )
