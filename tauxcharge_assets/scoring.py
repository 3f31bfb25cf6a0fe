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

``score_residuals`` keeps the older "anomaly likelihood" (Ahmad et al., 2017) on ``|z|`` alone: the
mean ``|z|`` of the last ``short_window`` slots against the ``long_window`` before, as a tail
probability scaled by ``score_decades``; ``reasons`` words either for an operator.

Every score at slot t uses values up to t only; all functions work on (slots x names) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

Z90 = 1.2815515655446004
ABS_NORMAL_MEAN = float(np.sqrt(2 / np.pi))
ABS_NORMAL_STD = float(np.sqrt(1 - 2 / np.pi))


@dataclass(frozen=True)
class ScoringConfig:
    """Thresholds and windows (in slots); the ``score_series`` defaults were chosen on the simulator's labels."""

    short_window: int = 3
    long_window: int = 288
    min_history: int = 12
    min_spread: float = 0.2
    max_abs_z: float = 50.0
    score_decades: float = 10.0
    warning_score: float = 0.5
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
        if self.short_window < 1 or self.long_window < self.min_history or self.min_history < 2:
            raise ValueError(
                "need short_window >= 1 and long_window >= min_history >= 2, got "
                f"{self.short_window}, {self.long_window}, {self.min_history}."
            )
        if self.level_window < 2 or min(self.baseline_window, self.record_window) < self.min_history:
            raise ValueError(
                "need level_window >= 2 and baseline_window, record_window >= min_history, got "
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


@dataclass(frozen=True)
class Scores:
    """All arrays have the shape of the input (slots x names); NaN where there was nothing to score."""

    abs_z: np.ndarray
    recent_error: np.ndarray  # mean |z| over the short window
    usual_error: np.ndarray  # mean |z| over the long window before it
    usual_spread: np.ndarray
    log10_tail: np.ndarray
    score: np.ndarray


def score_residuals(z: np.ndarray, config: ScoringConfig = ScoringConfig()) -> Scores:
    """Scores for every slot of a (slots x names) array of standardised residuals, causally."""
    abs_z = pd.DataFrame(np.minimum(np.abs(np.asarray(z, dtype=np.float64)), config.max_abs_z))
    recent = abs_z.rolling(config.short_window, min_periods=1).mean()
    history = abs_z.shift(config.short_window).rolling(config.long_window, min_periods=1)
    usual, spread, count = history.mean(), history.std(), history.count()
    warm = count >= config.min_history
    usual = usual.where(warm, ABS_NORMAL_MEAN)
    spread = spread.where(warm, ABS_NORMAL_STD).clip(lower=config.min_spread)
    # The short-window mean of k values spreads sqrt(k) times less than one value.
    excess = (recent - usual) / (spread / np.sqrt(config.short_window))
    log10_tail = log_ndtr(-excess.to_numpy()) / np.log(10.0)
    log10_tail = np.where(abs_z.isna().to_numpy(), np.nan, log10_tail)
    score = np.clip(-log10_tail / config.score_decades, 0.0, 1.0)
    return Scores(abs_z.to_numpy(), recent.to_numpy(), usual.to_numpy(), spread.to_numpy(), log10_tail, score)


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
        """Name of the evidence with the largest ratio per slot, for ``reasons``."""
        stacked = np.stack([np.nan_to_num(self.ratio[k]) for k in EVIDENCE])
        return np.asarray(EVIDENCE)[np.argmax(stacked, axis=0)]


def _frame(values: np.ndarray) -> pd.DataFrame:
    array = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(array[:, None] if array.ndim == 1 else array)


def _level_shift(values: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """|recent mean - usual median|; the baseline stops where the recent window starts."""
    recent = values.rolling(config.level_window, min_periods=1).mean()
    usual = values.shift(config.level_window).rolling(config.baseline_window, min_periods=config.min_history).median()
    return (recent - usual).abs()


def _variance_change(values: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    """|log(recent spread of changes / usual spread)|; a tiny floor keeps flat names finite."""
    spread = values.diff().rolling(config.level_window, min_periods=2).std()
    usual = spread.shift(config.level_window).rolling(config.baseline_window, min_periods=config.min_history).median()
    level = values.abs().shift(1).rolling(config.baseline_window, min_periods=1).median()
    floor = 1e-6 * (level.fillna(0.0) + 1e-9)
    return np.log((spread + floor) / (usual + floor)).abs()


def _record_ratio(evidence: pd.DataFrame, config: ScoringConfig) -> np.ndarray:
    """Evidence over its maximum of the previous ``record_window`` slots; 0 until ``min_history`` of them."""
    history = evidence.shift(1).rolling(config.record_window, min_periods=config.min_history)
    record = history.max().to_numpy()
    value = evidence.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(record > 0, value / record, np.where(value > 0, config.max_ratio, 0.0))
    return np.nan_to_num(np.minimum(ratio, config.max_ratio), nan=0.0)


def score_series(
    actual: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    config: ScoringConfig = ScoringConfig(),
) -> SeriesScores:
    """The detector (see the module docstring): causal scores of (slots x names) or 1-D arrays."""
    values = _frame(actual)
    missing = values.isna().to_numpy()
    z = standardised_residuals(
        values.to_numpy(), _frame(p10).to_numpy(), _frame(p50).to_numpy(), _frame(p90).to_numpy()
    )
    evidence = {
        "forecast": pd.DataFrame(np.minimum(np.abs(z), config.max_abs_z)),
        "residual_level": _level_shift(values - _frame(p50).to_numpy(), config),
        "value_level": _level_shift(values, config),
        "variance": _variance_change(values, config),
    }
    ratio = {name: _record_ratio(frame, config) for name, frame in evidence.items()}
    logs = np.sort(np.log(np.maximum(np.stack(list(ratio.values())), 1e-12)), axis=0)
    combined = np.exp(0.5 * (logs[-1] + logs[-2]))
    raw = combined / (1.0 + combined)
    if config.alarm_window:
        previous = pd.DataFrame(raw).shift(1).rolling(config.alarm_window, min_periods=1).max().fillna(0.0)
        score = np.where(raw > previous.to_numpy(), raw, 0.0)
    else:
        score = raw.copy()
    score = np.where(missing, np.nan, score)
    return SeriesScores({name: frame.to_numpy() for name, frame in evidence.items()}, ratio, combined, raw, score)


def severity(score: np.ndarray, config: ScoringConfig = ScoringConfig()) -> np.ndarray:
    return np.select(
        [score >= config.critical_score, score >= config.warning_score], ["critical", "warning"], default="normal"
    )


def reasons(
    actual: np.ndarray,
    forecast: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    recent: np.ndarray,
    usual: np.ndarray,
    log10_tail: np.ndarray,
    short_window: int,
) -> list[str]:
    """Why each value was flagged, in words an operator can check against the plot."""
    out = []
    for a, f, lo, hi, r, u, t in zip(actual, forecast, lower, upper, recent, usual, log10_tail, strict=True):
        side = "above" if a > f else "below"
        out.append(
            f"actual {a:.4g} is {abs(a - f):.4g} {side} the forecast {f:.4g} (80 % interval {lo:.4g}..{hi:.4g}); "
            f"over the last {short_window} slots the error averaged {r:.1f} vs a usual {u:.1f} "
            f"(in interval half-widths x {Z90:.2f}): a 1-in-{10 ** min(-t, 300):.3g} event"
        )
    return out
