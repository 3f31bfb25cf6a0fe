"""The anomaly detector: an anomaly likelihood on the LSTM's forecast surprise, plus a range rule.

It is Numenta's NAB detector with the project's LSTM in place of the HTM network (NAB's scoreboard shows
the likelihood stage carries most of HTM's score):

* **raw score** per slot: how surprising the value is under the one-step p10/p50/p90 forecast, as the
  decades of the two-sided Gaussian tail of ``|z|`` divided by ``raw_decades`` (5), in [0, 1]: a
  well-forecast value scores ~0.09, a value with tail probability 1e-5 (``|z|`` >= 4.4) scores 1;
* **anomaly likelihood** (nupic's ``anomaly_likelihood``, its defaults): the mean of the last
  ``averaging_window`` (10) raw scores judged against the running Gaussian of those means over the
  name's own history (the first ``learning_slots`` (288) skipped while the model settles,
  ``estimation_slots`` (100) more before any score; floors on the mean and variance as nupic), upper tail;
  nupic's filter reports a red tail right after another red one as yellow, so an episode alarms once;
* **score** on NAB's log scale, ``-log10(tail) / 10``: 0.5 means likelihood 1 - 1e-5, the same on every
  name whatever its unit or roughness, so one threshold serves all;
* **range rule** (NAB's numenta detector): a value beyond the name's min/max of the current day and the
  ``range_days`` (30) before by more than ``range_tolerance`` (5 %) of the range scores 1: a new record;
* **stuck collector**: a run of L identical values scores the decades of its probability under the
  name's own repeat rates, ``p(repeat) * p(repeat | repeat) ** (L - 2)``, less ``stuck_penalty_decades``
  (1). The rates are learnt from runs once they have ended, so a run under way never teaches what judges
  it: zeros repeating at night on a bursty count are usual there, a name that changes every slot and
  stops is not. After any alarm this channel stays below warning for ``episode_slots`` (12) values.

Measured (BENCHMARKS.md, ``benchmarks/nab_benchmark.py`` and ``benchmarks/detection_devset.py``): on NAB
realAWSCloudwatch 71.3 / 68.4 / 76.3 (standard / low FP / low FN) in-sample with one threshold per
profile, 71.2 / 62.8 / 76.3 at the shipped warning threshold; the previous evidence-record detector
scored 60.4 / 45.1 / 66.9. The stuck-collector channel was chosen on the simulated development set
(flat lines found 21 % -> 71 % of the time) and left NAB's in-sample scores as they were or better.

Everything is causal and streaming: ``step`` updates a fixed-size per-name ``DetectorState`` (~0.7 KiB
per name) with slot t only; ``score_matrix`` runs the same loop over a labelled file, so what the
benchmark measures is what the ticks run. One step at 10,000 names: ~7 ms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

Z90 = 1.2815515655446004  # p90 - p50 of a standard normal
LN10 = float(np.log(10.0))
SLOTS_PER_DAY = 288


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's settings: nupic's and NAB's published defaults, except ``raw_decades`` (chosen on NAB
    among 3, 4, 5, 7, 10, 20) and the thresholds (chosen on NAB, cross-validated: BENCHMARKS.md)."""

    raw_decades: float = 5.0
    averaging_window: int = 10
    learning_slots: int = 288
    estimation_slots: int = 100
    memory_slots: int = 8640  # the running moments forget with this horizon (a month)
    mean_floor: float = 0.03
    variance_floor: float = 3e-4
    red_decades: float = 5.0  # a tail <= 1e-5 is red; right after another red one it reports ...
    yellow_decades: float = 3.0  # ... 1e-3 instead (one alarm per episode)
    score_decades: float = 10.0
    range_tolerance: float = 0.05
    range_days: int = 30
    range_warmup: int = 12  # values seen before the range rule may fire
    stuck_channel: bool = True  # a run of identical values, against the name's own repeat rates
    stuck_min_run: int = 3
    stuck_memory: int = 8640  # the repeat rates forget with this horizon (slots)
    stuck_penalty_decades: float = 1.0  # taken off the channel's tail: a second channel must be more sure
    episode_slots: int = 12  # after any alarm, the stuck channel stays below warning for these values
    warning_score: float = 0.5  # likelihood 1 - 1e-5
    critical_score: float = 0.6  # likelihood 1 - 1e-6

    def __post_init__(self) -> None:
        if not 0 < self.warning_score <= self.critical_score <= 1:
            raise ValueError(
                f"need 0 < warning_score <= critical_score <= 1, got {self.warning_score} and {self.critical_score}."
            )
        if min(self.averaging_window, self.estimation_slots, self.memory_slots, self.range_days) < 1:
            raise ValueError("averaging_window, estimation_slots, memory_slots and range_days must be at least 1.")
        if self.raw_decades <= 0 or self.score_decades <= 0 or self.range_tolerance < 0:
            raise ValueError("raw_decades and score_decades must be positive and range_tolerance non-negative.")
        if min(self.stuck_min_run, self.stuck_memory) < 1 or min(self.stuck_penalty_decades, self.episode_slots) < 0:
            raise ValueError(
                "stuck_min_run and stuck_memory must be at least 1, "
                "stuck_penalty_decades and episode_slots non-negative."
            )


FIELDS = (
    "ring", "count", "estimated", "mean", "variance", "previous_red", "seen", "low", "high",
    "last_value", "run", "stuck_seen", "stuck_repeat", "stuck_again", "stuck_after", "stuck_red", "since_alarm",
)  # fmt: skip


@dataclass
class DetectorState:
    """Per-name arrays, one column per name of ``names``; ``day`` is the day index of the last step."""

    names: list[str]
    ring: np.ndarray  # (averaging_window, n) the last raw scores
    count: np.ndarray  # raw scores seen
    estimated: np.ndarray  # averaged scores folded into the moments
    mean: np.ndarray
    variance: np.ndarray
    previous_red: np.ndarray  # the previous tail was red (0/1)
    seen: np.ndarray  # values seen (range warm-up)
    low: np.ndarray  # (range_days + 1, n) daily minima, a ring indexed by day
    high: np.ndarray
    last_value: np.ndarray  # the previous value (NaN before the first)
    run: np.ndarray  # identical values in a row so far (0: the last value differed from the one before)
    stuck_seen: np.ndarray  # slots with a previous value, in ended runs (the memory caps their weight)
    stuck_repeat: np.ndarray  # the share of them that repeated the previous value ...
    stuck_again: np.ndarray  # ... the share of repeats among slots right after a repeat ...
    stuck_after: np.ndarray  # ... and the number of those slots
    stuck_red: np.ndarray
    since_alarm: np.ndarray  # values since the name's last score >= warning_score
    day: int | None = None

    @classmethod
    def new(cls, names: Sequence[str], config: DetectorConfig = DetectorConfig()) -> DetectorState:
        n = len(names)
        days = config.range_days + 1
        zeros = np.zeros(n)
        return cls(
            names=[str(name) for name in names],
            ring=np.zeros((config.averaging_window, n)),
            count=zeros.copy(), estimated=zeros.copy(), mean=zeros.copy(), variance=zeros.copy(),
            previous_red=zeros.copy(), seen=zeros.copy(),
            low=np.full((days, n), np.inf), high=np.full((days, n), -np.inf),
            last_value=np.full(n, np.nan), run=zeros.copy(), stuck_seen=zeros.copy(), stuck_repeat=zeros.copy(),
            stuck_again=zeros.copy(), stuck_after=zeros.copy(), stuck_red=zeros.copy(), since_alarm=np.full(n, 1e9),
        )  # fmt: skip

    def for_names(self, names: Sequence[str], config: DetectorConfig = DetectorConfig()) -> DetectorState:
        """The state reordered to ``names``; a name new to the detector starts fresh, a name gone is dropped."""
        names = [str(name) for name in names]
        if names == self.names:
            return self
        fresh = DetectorState.new(names, config)
        position = {name: i for i, name in enumerate(self.names)}
        known = [j for j, name in enumerate(names) if name in position]
        source = [position[names[j]] for j in known]
        for field in FIELDS:
            getattr(fresh, field)[..., known] = getattr(self, field)[..., source]
        fresh.day = self.day
        return fresh

    def copy(self) -> DetectorState:
        return dataclasses.replace(self, names=list(self.names), **{f: getattr(self, f).copy() for f in FIELDS})


def raw_score(value: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, raw_decades: float) -> np.ndarray:
    """Decades of the two-sided Gaussian tail of the standardised residual / ``raw_decades``, in [0, 1]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = value - p50
        half = np.where(residual >= 0, p90 - p50, p50 - p10)
        tiny = 1e-9 * np.maximum(np.abs(p50), 1.0)
        abs_z = np.abs(residual / np.maximum(half, tiny) * Z90)
    abs_z = np.nan_to_num(abs_z, nan=0.0, posinf=1e6)
    return np.minimum(-(log_ndtr(-abs_z) + np.log(2.0)) / LN10 / raw_decades, 1.0)


@dataclass(frozen=True)
class StepResult:
    """One slot for every name: ``score`` (NaN where the value is missing) and what made it."""

    score: np.ndarray
    range_record: np.ndarray  # the range rule fired
    averaged: np.ndarray  # mean raw score of the last slots
    usual_mean: np.ndarray  # the running Gaussian it was judged against
    usual_std: np.ndarray
    low: np.ndarray  # the range before this value
    high: np.ndarray
    stuck: np.ndarray  # the stuck-collector channel made the score
    run: np.ndarray  # repeats of the previous value so far (identical values in a row - 1)


def step(
    state: DetectorState,
    slot: int,
    value: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    config: DetectorConfig = DetectorConfig(),
) -> StepResult:
    """Score slot ``slot`` (an absolute 5-minute slot number: it places the daily extremes) for every name,
    and update ``state`` in place. A missing forecast skips the likelihood, not the range rule."""
    value = np.asarray(value, dtype=np.float64)
    p10, p50, p90 = (np.asarray(a, dtype=np.float64) for a in (p10, p50, p90))
    valid = np.isfinite(value)
    forecast = valid & np.isfinite(p50) & np.isfinite(p10) & np.isfinite(p90)
    columns = np.arange(value.size)

    raw = raw_score(value, p10, p50, p90, config.raw_decades)
    position = (state.count % config.averaging_window).astype(np.intp)
    state.ring[position, columns] = np.where(forecast, raw, state.ring[position, columns])
    state.count += forecast
    total = state.ring[0].copy()
    for row in state.ring[1:]:  # a fixed summation order: the same bits whatever the number of names
        total += row
    averaged = total / np.clip(state.count, 1, config.averaging_window)
    usual_mean = np.maximum(state.mean, config.mean_floor)
    usual_std = np.sqrt(np.maximum(state.variance, config.variance_floor))
    log10_tail = log_ndtr(-(averaged - usual_mean) / usual_std) / LN10
    ready = forecast & (state.estimated >= config.estimation_slots)
    red = ready & (log10_tail <= -config.red_decades)
    log10_tail = np.where(red & (state.previous_red > 0), -config.yellow_decades, log10_tail)
    state.previous_red = np.where(forecast, red, state.previous_red)
    likelihood_score = np.where(ready, np.minimum(-log10_tail / config.score_decades, 1.0), 0.0)
    fold = forecast & (state.count > config.learning_slots)
    state.estimated += fold
    weight = np.where(fold, 1.0 / np.clip(np.minimum(state.estimated, config.memory_slots), 1, None), 0.0)
    delta = averaged - state.mean
    state.mean += weight * delta
    state.variance = (1.0 - weight) * (state.variance + weight * delta * delta)

    day = slot // SLOTS_PER_DAY
    days = config.range_days + 1
    if state.day is None or day != state.day:  # a new day replaces the oldest day's extremes
        start = day if state.day is None else max(state.day + 1, day - days + 1)
        for d in range(start, day + 1):
            state.low[d % days] = np.inf
            state.high[d % days] = -np.inf
        state.day = day
    low, high = state.low.min(axis=0), state.high.max(axis=0)
    with np.errstate(invalid="ignore"):
        tolerance = (high - low) * config.range_tolerance
        record = valid & (state.seen >= config.range_warmup) & (high > low)
        record &= (value > high + tolerance) | (value < low - tolerance)
    today = day % days
    state.low[today] = np.where(valid, np.fmin(state.low[today], value), state.low[today])
    state.high[today] = np.where(valid, np.fmax(state.high[today], value), state.high[today])
    state.seen += valid

    stuck = _stuck_channel(state, value, valid, config)
    quiet = config.yellow_decades / config.score_decades  # one alarm per episode, whichever part raised it
    stuck = np.where(state.since_alarm < config.episode_slots, np.minimum(stuck, quiet), stuck)
    stuck_wins = ~record & (stuck > likelihood_score)
    score = np.where(valid, np.where(record, 1.0, np.maximum(likelihood_score, stuck)), np.nan)
    alarm = valid & (score >= config.warning_score)
    state.since_alarm = np.where(valid, np.where(alarm, 0.0, state.since_alarm + 1.0), state.since_alarm)
    return StepResult(score, record, averaged, usual_mean, usual_std, low, high, stuck_wins, state.run.copy())


def _stuck_channel(state: DetectorState, value: np.ndarray, valid: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """Score of a run of identical values against the name's own repeat rates (a two-state Markov chain);
    updates the run and, when a run ends, the rates."""
    repeat = valid & (value == state.last_value)
    seen = np.minimum(state.stuck_seen, config.stuck_memory)
    after = np.minimum(state.stuck_after, config.stuck_memory)
    # p(repeat) Laplace-smoothed; p(repeat | repeat) shrunk towards p(repeat) while it has few cases
    p_repeat = (state.stuck_repeat * seen + 0.5) / (seen + 1.0)
    p_again = (state.stuck_again * after + 2.0 * p_repeat) / (after + 2.0)
    run = np.where(repeat, state.run + 1, np.where(valid, 0.0, state.run))
    decades = -(np.log10(p_repeat) + np.maximum(run - 1, 0) * np.log10(p_again)) - config.stuck_penalty_decades
    ready = config.stuck_channel & repeat & (run >= config.stuck_min_run) & (state.stuck_seen >= config.learning_slots)
    red = ready & (decades >= config.red_decades)
    decades = np.where(red & (state.stuck_red > 0), np.minimum(decades, config.yellow_decades), decades)
    state.stuck_red = np.where(valid, red, state.stuck_red)
    # A run teaches the rates once it has ended: a change after L repeats is L + 1 slots with L repeats, and
    # L slots right after a repeat with L - 1 repeats among them.
    ended = valid & np.isfinite(state.last_value) & ~repeat
    length = np.where(ended, state.run, 0.0)
    state.stuck_repeat = np.where(
        ended, (state.stuck_repeat * seen + length) / (seen + length + 1.0), state.stuck_repeat
    )
    state.stuck_seen = state.stuck_seen + np.where(ended, length + 1.0, 0.0)
    taught = ended & (length > 0)
    state.stuck_again = np.where(
        taught, (state.stuck_again * after + length - 1.0) / np.maximum(after + length, 1.0), state.stuck_again
    )
    state.stuck_after = state.stuck_after + np.where(taught, length, 0.0)
    state.run = run
    state.last_value = np.where(valid, value, state.last_value)
    return np.where(ready, np.clip(decades / config.score_decades, 0.0, 1.0), 0.0)


def score_matrix(
    values: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    config: DetectorConfig = DetectorConfig(),
    first_slot: int = 0,
    state: DetectorState | None = None,
) -> np.ndarray:
    """(slots x names) scores of consecutive slots from ``first_slot``: the same ``step`` loop, from
    ``state`` (updated in place) or a fresh one."""
    values, p10, p50, p90 = (np.atleast_2d(np.asarray(a, dtype=np.float64).T).T for a in (values, p10, p50, p90))
    state = state if state is not None else DetectorState.new([str(i) for i in range(values.shape[1])], config)
    scores = [step(state, first_slot + t, values[t], p10[t], p50[t], p90[t], config).score for t in range(len(values))]
    return np.stack(scores) if scores else np.empty((0, values.shape[1]))


def severity(score: np.ndarray, config: DetectorConfig = DetectorConfig()) -> np.ndarray:
    return np.select(
        [score >= config.critical_score, score >= config.warning_score], ["critical", "warning"], default="normal"
    )
