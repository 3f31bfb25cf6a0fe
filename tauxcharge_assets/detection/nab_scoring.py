"""NAB scoring of a detector's anomaly scores against labelled windows, so results compare with published ones.

An independent implementation of the scoring described in Lavin & Ahmad (2015), "Evaluating Real-time
Anomaly Detection Algorithms - the Numenta Anomaly Benchmark", and done by NAB 1.x in ``nab/sweeper.py``
(row weights, probation, threshold sweep), ``nab/optimizer.py`` (one threshold per profile for the whole
corpus), ``nab/runner.py::normalize`` and ``config/profiles.json``. Where this module departs from NAB:

* a window limit need not be a timestamp of the file: the window covers the rows inside ``[start, end]``
  (NAB looks the limits up exactly and fails otherwise);
* a false positive after a one-row window sits at relative position 2.0 (NAB's sweeper divides by zero
  there; 2.0 is what its older ``scorer.py`` used);
* a threshold below every score means "every row fires" (NAB's ``scoreDataSet`` returns no row there);
* thresholds whose corpus scores differ by less than 1e-9 count as tied; NAB, like this module, then
  keeps the highest threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

PROBATIONARY_PERCENT = 0.15
NEVER_FIRES = 1.1  # NAB's sweep starts above every score in [0, 1]: no row fires
_TIE_TOLERANCE = 1e-9

Window = tuple[Any, Any]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CostProfile:
    """A NAB cost matrix; ``tn`` is listed in NAB's profiles but no formula uses it."""

    tp: float
    fp: float
    fn: float
    tn: float = 1.0


PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostProfile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostProfile(tp=1.0, fp=0.11, fn=2.0),
}


@dataclass(frozen=True)
class FileScore:
    """Raw NAB score of one file; tp/fp/fn/tn count scored rows (NAB's counts), windows count events."""

    raw: float
    tp: int
    fp: int
    fn: int
    tn: int
    windows: int  # windows with at least one row after the probationary period
    detected_windows: int


@dataclass(frozen=True)
class CorpusScore:
    """NAB's corpus result at one threshold, with event-level precision, recall and F1 alongside.

    ``recall`` = detected windows / scored windows (event level); ``precision`` = fired rows inside a
    window / all fired rows, i.e. the share of alarms that fell in a labelled window; both after probation.
    """

    profile: CostProfile
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    tp: int
    fp: int
    fn: int
    tn: int
    windows: int
    detected_windows: int
    precision: float
    recall: float
    f1: float
    per_file: pd.DataFrame

    def summary(self) -> dict[str, float]:
        """The scalar results, e.g. for one row of a table."""
        return {key: value for key, value in asdict(self).items() if key not in ("profile", "per_file")}


@dataclass(frozen=True)
class _Rows:
    """Scored rows (after probation): score, NAB's unweighted row value, window id (-1 outside one)."""

    scores: Floats
    base: Floats
    window: Ints
    windows: int  # windows with at least one scored row
    labelled: int  # every labelled window: NAB's perfect score counts these


def scaled_sigmoid(position: Floats) -> Floats:
    """NAB's ``scaledSigmoid``: 2*sigmoid(-5x) - 1, and -1 beyond 3 (a false positive far after a window)."""
    position = np.asarray(position, dtype=np.float64)
    inner = 2.0 / (1.0 + np.exp(5.0 * np.minimum(position, 3.0))) - 1.0
    return np.where(position > 3.0, -1.0, inner)


MAX_TP = float(scaled_sigmoid(np.array(-1.0)))  # a detection on a window's first row is worth exactly A_TP


def probationary_length(rows: int, percent: float = PROBATIONARY_PERCENT) -> float:
    """Rows with an index below this are not scored: ``min(floor(p * n), p * 5000)`` as in NAB."""
    return min(math.floor(percent * rows), percent * 5000)


def _profile(profile: str | CostProfile) -> CostProfile:
    if isinstance(profile, CostProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"Unknown NAB profile {profile!r}: use one of {sorted(PROFILES)} or pass a CostProfile.")
    return PROFILES[profile]


def _utc_ns(values: Any) -> Ints:
    if not isinstance(values, pd.Series | pd.Index | np.ndarray):
        values = list(values)
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8.astype(np.int64)


def _window_rows(stamps: Ints, windows: Sequence[Window], name: str) -> list[tuple[int, int]]:
    """First and last row of each window, sorted; overlapping or empty windows are refused."""
    limits: list[tuple[int, int]] = []
    bounds = sorted(zip(_utc_ns(w[0] for w in windows), _utc_ns(w[1] for w in windows), strict=True))
    for start, end in bounds:
        first = int(np.searchsorted(stamps, start, side="left"))
        last = int(np.searchsorted(stamps, end, side="left"))  # a repeated end stamp: its first row, as NAB
        last = last if last < stamps.size and stamps[last] == end else last - 1
        window = f"{pd.Timestamp(start, tz='UTC')} .. {pd.Timestamp(end, tz='UTC')}"
        if last < first:
            raise ValueError(f"{name}: the labelled window {window} holds no row: are these the file's labels?")
        if limits and first <= limits[-1][1]:
            raise ValueError(f"{name}: the labelled window {window} overlaps the previous one: merge them.")
        limits.append((first, last))
    return limits


def _prepare(timestamps: Any, scores: Any, windows: Sequence[Window], probationary_percent: float, name: str) -> _Rows:
    """Each row's NAB weight before the cost matrix, as the sweeper's per-row pass defines it."""
    stamps = _utc_ns(timestamps)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != stamps.shape:
        raise ValueError(f"{name}: {stamps.size} timestamps but {values.size} anomaly scores.")
    if np.any(stamps == np.iinfo(np.int64).min):  # NaT
        raise ValueError(f"{name}: some timestamps are missing or unreadable: drop or repair those rows.")
    # Rows are scored in file order. A clock that goes back (a daylight-saving change, a collector restart)
    # is placed by the latest time seen so far, so windows stay runs of consecutive rows; repeated stamps
    # are kept as they are (NAB's own files have some).
    stamps = np.maximum.accumulate(stamps) if stamps.size else stamps
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} anomaly scores are missing or outside [0, 1] (first: {values[bad][0]}): "
            "NAB needs a score in [0, 1] on every row; rescale or clip the detector's output."
        )
    limits = _window_rows(stamps, windows, name)
    rows = np.arange(values.size)
    window = np.full(values.size, -1, dtype=np.int64)
    base = np.empty(values.size, dtype=np.float64)
    for k, (first, last) in enumerate(limits):
        inside = rows[first : last + 1]
        window[first : last + 1] = k
        # Relative position in the window: -1 on its first row, -1/width on its last.
        base[first : last + 1] = scaled_sigmoid(-(last - inside + 1) / (last - first + 1)) / MAX_TP
    outside = window < 0
    lasts = np.array([last for _, last in limits], dtype=np.int64)
    widths = np.array([last - first + 1 for first, last in limits], dtype=np.int64)
    previous = np.searchsorted(lasts, rows, side="left") - 1  # last window ending before the row
    base[outside & (previous < 0)] = -1.0  # no window before: as bad as a far false positive
    after = outside & (previous >= 0)
    before = previous[after]
    span = (widths[before] - 1).astype(np.float64)
    position = np.divide(rows[after] - lasts[before], span, out=np.full(span.size, 2.0), where=span > 0)
    base[after] = scaled_sigmoid(position)
    scored = rows >= probationary_length(values.size, probationary_percent)
    kept = window[scored]
    return _Rows(values[scored], base[scored], kept, int(np.unique(kept[kept >= 0]).size), len(limits))


def _score_rows(rows: _Rows, threshold: float, profile: CostProfile) -> FileScore:
    """Score at one threshold: earliest detection per window, every false positive, -A_FN per missed window."""
    fired = rows.scores >= threshold
    inside = rows.window >= 0
    hits = fired & inside
    detected, first = np.unique(rows.window[hits], return_index=True)
    raw = (
        profile.tp * float(rows.base[hits][first].sum())
        + profile.fp * float(rows.base[fired & ~inside].sum())
        - profile.fn * (rows.windows - detected.size)
    )
    return FileScore(
        raw=raw,
        tp=int(hits.sum()),
        fp=int((fired & ~inside).sum()),
        fn=int((~fired & inside).sum()),
        tn=int((~fired & ~inside).sum()),
        windows=rows.windows,
        detected_windows=int(detected.size),
    )


def _concat(prepared: Mapping[str, _Rows]) -> _Rows:
    """One corpus-wide row set; window ids are shifted so that each stays unique."""
    parts = list(prepared.values())
    offsets = np.cumsum([0] + [part.labelled for part in parts[:-1]])
    return _Rows(
        scores=np.concatenate([part.scores for part in parts]),
        base=np.concatenate([part.base for part in parts]),
        window=np.concatenate([np.where(p.window >= 0, p.window + o, -1) for p, o in zip(parts, offsets, strict=True)]),
        windows=sum(part.windows for part in parts),
        labelled=sum(part.labelled for part in parts),
    )


def _sweep(rows: _Rows, profile: CostProfile) -> tuple[Floats, Floats]:
    """Raw score at every candidate threshold (NEVER_FIRES, then each distinct score, descending).

    The same result as NAB's ``calcScoreByThreshold`` without its per-row loop: a false positive adds its
    weight from its own score downwards; a window's value changes only at a row scoring higher than every
    earlier row of the window (that row becomes the earliest detection), by the difference with the next
    such row, or with -A_FN for the highest-scoring one.
    """
    values, inverse = np.unique(rows.scores, return_inverse=True)
    step = values.size - 1 - inverse.reshape(-1)  # index in the descending list of distinct scores
    inside = rows.window >= 0
    delta = np.bincount(step[~inside], weights=profile.fp * rows.base[~inside], minlength=values.size)
    ids, scores = rows.window[inside], rows.scores[inside]
    if ids.size:
        best = pd.Series(scores).groupby(ids).cummax().to_numpy()
        earlier = np.concatenate([[-np.inf], best[:-1]])
        earlier[np.concatenate([[True], ids[1:] != ids[:-1]])] = -np.inf
        record = scores > earlier
        weight, owner = profile.tp * rows.base[inside][record], ids[record]
        later = np.concatenate([weight[1:], [0.0]])
        later[np.concatenate([owner[1:] != owner[:-1], [True]])] = -profile.fn
        delta += np.bincount(step[inside][record], weights=weight - later, minlength=values.size)
    never = -profile.fn * rows.windows
    return np.concatenate([[NEVER_FIRES], values[::-1]]), np.concatenate([[never], never + np.cumsum(delta)])


def _best_threshold(thresholds: Floats, totals: Floats) -> float:
    """Highest threshold with the best corpus score, as NAB's stable sort of the sweep keeps it."""
    return float(thresholds[int(np.argmax(totals >= totals.max() - _TIE_TOLERANCE))])


def _null_score(rows: _Rows, profile: CostProfile) -> float:
    """NAB's baseline: the null detector (a constant score) at its optimised threshold.

    It either never fires (-A_FN per window) or fires on every row; the first wins in any realistic corpus.
    """
    never = -profile.fn * rows.windows
    inside = rows.window >= 0
    _, first = np.unique(rows.window[inside], return_index=True)
    always = profile.tp * float(rows.base[inside][first].sum()) + profile.fp * float(rows.base[~inside].sum())
    return max(never, always)


def score_file(
    timestamps: Any,
    scores: Any,
    windows: Sequence[Window],
    threshold: float,
    profile: str | CostProfile = "standard",
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> FileScore:
    """Raw NAB score of one file: rows with ``score >= threshold`` fire; the first 15 % are not scored."""
    return _score_rows(
        _prepare(timestamps, scores, windows, probationary_percent, "series"), threshold, _profile(profile)
    )


def _prepare_corpus(
    results: Mapping[str, pd.DataFrame], windows: Mapping[str, Sequence[Window]], probationary_percent: float
) -> dict[str, _Rows]:
    if not results:
        raise ValueError("No results to score: pass one DataFrame (timestamp, anomaly_score) per file.")
    unlabelled = sorted(set(results) - set(windows))
    if unlabelled:
        raise ValueError(
            f"No labelled windows for {unlabelled}: results are keyed by the data file's stem "
            "(e.g. 'ec2_cpu_utilization_24ae8d'); strip any detector prefix (read_results_directory(detector=...))."
        )
    prepared: dict[str, _Rows] = {}
    for name, frame in results.items():
        missing = {"timestamp", "anomaly_score"} - set(frame.columns)
        if missing:
            raise ValueError(f"{name}: columns {sorted(missing)} are missing; a result has timestamp,anomaly_score.")
        prepared[name] = _prepare(frame["timestamp"], frame["anomaly_score"], windows[name], probationary_percent, name)
    return prepared


def _corpus_score(prepared: Mapping[str, _Rows], profile: CostProfile, threshold: float | None) -> CorpusScore:
    rows = _concat(prepared)
    if threshold is None:
        threshold = _best_threshold(*_sweep(rows, profile))
    files = {name: _score_rows(part, threshold, profile) for name, part in prepared.items()}
    per_file = pd.DataFrame([{"file": name, **asdict(score)} for name, score in files.items()])
    raw = float(per_file["raw"].sum())
    null, perfect = _null_score(rows, profile), profile.tp * rows.labelled
    counts = {key: int(per_file[key].sum()) for key in ("tp", "fp", "fn", "tn", "windows", "detected_windows")}
    fired = counts["tp"] + counts["fp"]
    precision = counts["tp"] / fired if fired else 0.0
    recall = counts["detected_windows"] / counts["windows"] if counts["windows"] else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    normalized = 100.0 * (raw - null) / (perfect - null) if perfect != null else math.nan
    return CorpusScore(
        profile=profile,
        threshold=threshold,
        raw=raw,
        null=null,
        perfect=perfect,
        normalized=normalized,
        **counts,
        precision=precision,
        recall=recall,
        f1=f1,
        per_file=per_file,
    )


def score_corpus(
    results: Mapping[str, pd.DataFrame],
    windows: Mapping[str, Sequence[Window]],
    profile: str | CostProfile = "standard",
    threshold: float | None = None,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> CorpusScore:
    """NAB score of every result file; ``threshold=None`` picks the corpus-wide best one, as NAB's optimiser.

    ``normalized`` = 100 * (raw - null) / (perfect - null), perfect = A_TP * labelled windows of the scored
    files (NAB's ``normalize``). Labelled files without results are ignored.
    """
    return _corpus_score(_prepare_corpus(results, windows, probationary_percent), _profile(profile), threshold)


def evaluate_all_profiles(
    results: Mapping[str, pd.DataFrame],
    windows: Mapping[str, Sequence[Window]],
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> pd.DataFrame:
    """One row per NAB profile, each at its own optimised threshold (as NAB reports its scoreboard)."""
    prepared = _prepare_corpus(results, windows, probationary_percent)
    table = {name: _corpus_score(prepared, cost, None).summary() for name, cost in PROFILES.items()}
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("profile")


def read_results_directory(directory: Path, detector: str | None = None) -> dict[str, pd.DataFrame]:
    """NAB result CSVs of one folder (not its subfolders), keyed by the data file's stem.

    Accepted: ``<stem>.csv`` or, with ``detector``, NAB's ``<detector>_<stem>.csv``, each with at least
    ``timestamp`` and ``anomaly_score`` (NAB also writes value, label, S(t)_...). NAB's ``*_scores.csv``
    summaries are skipped.
    """
    paths = sorted(p for p in Path(directory).glob("*.csv") if not p.name.endswith("_scores.csv"))
    if not paths:
        raise FileNotFoundError(f"No result CSV in {directory}: pass the folder holding one CSV per data file.")
    results: dict[str, pd.DataFrame] = {}
    prefix = f"{detector}_" if detector else ""
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"timestamp", "anomaly_score"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"{path}: columns {sorted(missing)} are missing; a NAB result has timestamp,anomaly_score."
            )
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        stem = path.stem.removeprefix(prefix) if prefix else path.stem
        if stem in results:
            raise ValueError(f"{path}: a second result for {stem!r}; keep one file per data file.")
        results[stem] = frame
    return results


@dataclass(frozen=True)
class CrossValidated:
    """Held-out NAB score: each fold's threshold (and candidate, if several) chosen on the other files only.

    ``normalized`` sums the held-out files' raw scores and normalises them with the whole corpus's null and
    perfect scores, as NAB normalises a corpus; ``fold_normalized`` is each fold's own normalised score.
    """

    profile: str
    normalized: float
    fold_normalized: list[float]
    thresholds: list[float]
    chosen: list[int]  # index of the candidate chosen in each fold


def cross_validate(
    candidates: Sequence[Mapping[str, pd.DataFrame]],
    windows: Mapping[str, Sequence[Window]],
    folds: Sequence[Sequence[str]],
    profile: str = "standard",
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> CrossValidated:
    """Choose, on the files outside each fold, the candidate (one result set per detector setting) and the
    threshold with the best score; score the fold's files with them. Nothing about a held-out file is seen
    before it is scored."""
    cost = _profile(profile)
    prepared = [_prepare_corpus(results, windows, probationary_percent) for results in candidates]
    everything = _concat(prepared[0])
    null, perfect = _null_score(everything, cost), cost.tp * everything.labelled
    total, per_fold, thresholds, chosen = 0.0, [], [], []
    for fold in folds:
        held_out = set(fold)
        best: tuple[float, int, float] | None = None
        for index, rows in enumerate(prepared):
            training = {name: part for name, part in rows.items() if name not in held_out}
            fitted = _corpus_score(training, cost, None)
            if best is None or fitted.normalized > best[0] + _TIE_TOLERANCE:
                best = (fitted.normalized, index, fitted.threshold)
        assert best is not None
        _, index, threshold = best
        tested = _corpus_score({name: prepared[index][name] for name in fold}, cost, threshold)
        total += tested.raw
        per_fold.append(tested.normalized)
        thresholds.append(threshold)
        chosen.append(index)
    normalized = 100.0 * (total - null) / (perfect - null) if perfect != null else math.nan
    return CrossValidated(profile, normalized, per_fold, thresholds, chosen)
