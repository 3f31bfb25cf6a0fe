"""NAB scoring on hand-made series whose scores are worked out in the comments, and on the real AWS files.

NAB's scaled sigmoid is S(x) = 2 / (1 + e^(5x)) - 1 = -tanh(2.5 x), so a true positive at relative position
x is worth A_TP * S(x) / S(-1) = A_TP * tanh(-2.5 x) / tanh(2.5), and a false positive A_FP * S(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data import nab
from tauxcharge_assets.detection.nab_scoring import (
    NEVER_FIRES,
    PROFILES,
    CostProfile,
    FileScore,
    evaluate_all_profiles,
    probationary_length,
    read_results_directory,
    scaled_sigmoid,
    score_corpus,
    score_file,
)

FP = 0.11  # standard profile's A_FP
TANH_MAX = math.tanh(2.5)  # S(-1): the value of a detection on a window's first row


def stamps(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")


def fired(n: int, rows: dict[int, float] | list[int]) -> np.ndarray:
    """Scores of 0 except on ``rows`` (1.0 for a list, the given score for a dict)."""
    scores = np.zeros(n)
    for row, score in rows.items() if isinstance(rows, dict) else ((r, 1.0) for r in rows):
        scores[row] = score
    return scores


def one_window_file(n: int, rows: list[int], first: int = 5, last: int = 9, probation: float = 0.0) -> FileScore:
    """Standard score at threshold 0.5 of an n-row file with one window over rows first..last."""
    times = stamps(n)
    return score_file(times, fired(n, rows), [(times[first], times[last])], 0.5, probationary_percent=probation)


def frame(times: pd.DatetimeIndex, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": times, "anomaly_score": scores})


def test_profiles_and_sigmoid_are_nab_ones() -> None:
    # config/profiles.json of NAB 1.x
    assert PROFILES["standard"] == CostProfile(tp=1.0, fp=0.11, fn=1.0, tn=1.0)
    assert PROFILES["reward_low_FP_rate"] == CostProfile(tp=1.0, fp=0.22, fn=1.0, tn=1.0)
    assert PROFILES["reward_low_FN_rate"] == CostProfile(tp=1.0, fp=0.11, fn=2.0, tn=1.0)
    # The landmarks of NAB's scaledSigmoid docstring; beyond 3 a false positive is worth -1.
    values = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 2.9, 3.5]))
    assert values[:4] == pytest.approx([0.98661, 0.84828, 0.0, -0.98661], abs=1e-5)
    assert values[4] > -1.0 and values[5] == -1.0


def test_detection_on_the_first_row_of_a_window_earns_a_full_true_positive() -> None:
    # Window rows 5..9 (width 5); row 5 is at position -(9 - 5 + 1) / 5 = -1: S(-1) / S(-1) * A_TP = 1.
    score = one_window_file(20, [5])
    assert score.raw == pytest.approx(1.0)
    assert (score.tp, score.fp, score.fn, score.tn) == (1, 0, 4, 15)  # NAB's row counts
    assert (score.windows, score.detected_windows) == (1, 1)
    # Naive timestamps are read as UTC, like the tz-aware windows.
    times = stamps(20)
    naive = score_file(times.tz_localize(None), fired(20, [5]), [(times[5], times[9])], 0.5, probationary_percent=0)
    assert naive.raw == pytest.approx(1.0)


def test_detection_on_the_last_row_of_a_window_earns_less() -> None:
    # Row 9 is at -(9 - 9 + 1) / 5 = -0.2: tanh(0.5) / tanh(2.5) = 0.4684.
    assert one_window_file(20, [9]).raw == pytest.approx(math.tanh(0.5) / TANH_MAX)
    assert one_window_file(20, [9]).raw == pytest.approx(0.46838, abs=1e-5)


def test_several_detections_in_one_window_count_once_by_the_earliest() -> None:
    # Rows 6, 7, 8 fire; only row 6 counts: position -(9 - 6 + 1) / 5 = -0.8 -> tanh(2) / tanh(2.5) = 0.9768.
    score = one_window_file(20, [6, 7, 8])
    assert score.raw == pytest.approx(math.tanh(2.0) / TANH_MAX)
    assert score.tp == 3 and score.detected_windows == 1
    assert one_window_file(20, [8, 6]).raw == pytest.approx(score.raw)


def test_false_positive_right_after_a_window_costs_less_than_one_far_away() -> None:
    # Window 5..9 is missed (-1). Row 10 is 1 row after its end, at 1 / (width - 1) = 0.25: 0.11 * -tanh(0.625).
    right_after = one_window_file(40, [10])
    assert right_after.raw == pytest.approx(-1.0 - FP * math.tanh(0.625))
    assert right_after.raw == pytest.approx(-1.06101, abs=1e-5)
    assert (right_after.fp, right_after.detected_windows) == (1, 0)
    # Row 30 is at 21 / 4 = 5.25 > 3, and row 2 has no window before it: both cost the full A_FP.
    assert one_window_file(40, [30]).raw == pytest.approx(-1.0 - FP)
    assert one_window_file(40, [2]).raw == pytest.approx(-1.0 - FP)


def test_a_missed_window_costs_a_false_negative() -> None:
    times = stamps(60)
    windows = [(times[10], times[14]), (times[30], times[34])]
    assert score_file(times, np.zeros(60), windows, 0.5).raw == pytest.approx(-2.0)  # -A_FN per window
    assert score_file(times, np.zeros(60), windows, 0.5, "reward_low_FN_rate").raw == pytest.approx(-4.0)
    assert score_file(times, np.zeros(60), [], 0.5).raw == 0.0


def test_rows_in_the_probationary_period_are_not_scored() -> None:
    # 40 rows: floor(0.15 * 40) = 6 rows of probation. Window 20..24 is missed (-1) either way.
    assert probationary_length(40) == 6 and probationary_length(10_000) == 750  # capped at 0.15 * 5000
    in_probation = one_window_file(40, [5], 20, 24, probation=0.15)
    assert in_probation.raw == pytest.approx(-1.0) and in_probation.fp == 0
    assert in_probation.tn + in_probation.fn == 40 - 6
    assert one_window_file(40, [6], 20, 24, probation=0.15).raw == pytest.approx(-1.0 - FP)
    # The cap: on 10 000 rows row 749 is in probation, row 750 is scored.
    assert one_window_file(10_000, [749], 9000, 9009, probation=0.15).raw == pytest.approx(-1.0)
    assert one_window_file(10_000, [750], 9000, 9009, probation=0.15).raw == pytest.approx(-1.0 - FP)
    # A window inside the probation is neither a TP nor a FN, but still places the FPs after it:
    # window 1..3 (width 3), row 6 at 3 / 2 = 1.5 -> 0.11 * -tanh(3.75).
    early = one_window_file(40, [6], 1, 3, probation=0.15)
    assert early.raw == pytest.approx(-FP * math.tanh(3.75)) and early.windows == 0


def threshold_corpus() -> tuple[dict[str, pd.DataFrame], dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]]:
    """40 rows (6 in probation), window 20..24 (rows 20, 23, 22 = 0.9, 0.85, 0.6), FPs row 10 = 0.7, row 30 = 0.95."""
    times = stamps(40)
    scores = fired(40, {20: 0.9, 23: 0.85, 22: 0.6, 10: 0.7, 30: 0.95})
    return {"a": frame(times, scores)}, {"a": [(times[20], times[24])]}


def test_threshold_search_finds_the_known_best_threshold() -> None:
    results, windows = threshold_corpus()
    # 1.1: -1 (missed). 0.95: row 30 is 6 / 4 = 1.5 after the window: -1 - 0.11 tanh(3.75) = -1.1099.
    # 0.9: row 20 is the window's first row: 1 - 0.11 tanh(3.75) = 0.8901 (best). 0.85: row 23 changes
    # nothing, a tie that NAB settles by keeping the higher threshold (its sort is stable).
    # 0.7: row 10 has no window before it: 0.8901 - 0.11. 0.6: row 22 changes nothing. 0: 28 more FPs.
    best = score_corpus(results, windows)
    assert best.threshold == 0.9
    assert best.raw == pytest.approx(1.0 - FP * math.tanh(3.75))
    assert score_corpus(results, windows, threshold=0.85).raw == pytest.approx(best.raw)
    assert score_corpus(results, windows, threshold=0.7).raw == pytest.approx(best.raw - FP)
    assert score_corpus(results, windows, threshold=0.6).raw == pytest.approx(best.raw - FP)
    assert score_corpus(results, windows, threshold=NEVER_FIRES).raw == pytest.approx(-1.0)
    assert (best.tp, best.fp, best.detected_windows, best.precision, best.recall) == (1, 1, 1, 0.5, 1.0)


def reference_raw(scores: np.ndarray, spans: list[tuple[int, int]], threshold: float, cost: CostProfile) -> float:
    """NAB's raw score row by row, straight from its description; spans are (first, last) rows, 15 % probation."""

    def sigmoid(x: float) -> float:
        return -1.0 if x > 3.0 else -math.tanh(2.5 * x)

    start = min(math.floor(0.15 * len(scores)), 750)
    total = 0.0
    for first, last in spans:
        hits = [i for i in range(max(first, start), last + 1) if scores[i] >= threshold]
        if hits:
            total += cost.tp * sigmoid(-(last - hits[0] + 1) / (last - first + 1)) / TANH_MAX
        elif last >= start:
            total -= cost.fn
    for i in range(start, len(scores)):
        if scores[i] < threshold or any(first <= i <= last for first, last in spans):
            continue
        before = [(first, last) for first, last in spans if last < i]
        total += cost.fp * (sigmoid((i - before[-1][1]) / (before[-1][1] - before[-1][0])) if before else -1.0)
    return total


def test_the_sweep_agrees_with_row_by_row_scoring_at_every_threshold() -> None:
    rng = np.random.default_rng(7)
    results, windows, spans = {}, {}, {}
    for name, n in (("a", 200), ("b", 300), ("c", 120)):
        times = stamps(n)
        results[name] = frame(times, np.round(rng.random(n) ** 4 * 20) / 20)  # 21 levels: many ties
        spans[name] = [(10, 14), (n // 2, n // 2 + 9), (n - 30, n - 12)]  # the first lies in the probation
        windows[name] = [(times[first], times[last]) for first, last in spans[name]]
    candidates = [NEVER_FIRES, *np.unique(np.concatenate([r["anomaly_score"] for r in results.values()]))]
    for name, cost in PROFILES.items():
        raws = {}
        for threshold in candidates:
            expected = sum(
                reference_raw(r["anomaly_score"].to_numpy(), spans[k], threshold, cost) for k, r in results.items()
            )
            raws[threshold] = expected
            assert score_corpus(results, windows, name, threshold=threshold).raw == pytest.approx(expected)
        best, top = score_corpus(results, windows, name), max(raws.values())
        assert best.raw == pytest.approx(top)
        assert best.threshold == max(t for t, raw in raws.items() if raw >= top - 1e-9)  # ties: highest threshold
        assert best.perfect == 9.0 and best.windows == 6  # NAB's perfect counts the windows lost to probation


def profiles_corpus() -> tuple[dict[str, pd.DataFrame], dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]]:
    """100 rows (15 in probation); 12 FPs at 0.5 before any window; window A 40..49 (row 40 = 0.9), B 70..79
    (rows 70, 71 = 0.5)."""
    times = stamps(100)
    scores = fired(100, {40: 0.9, 70: 0.5, 71: 0.5, **dict.fromkeys(range(20, 32), 0.5)})
    return {"f": frame(times, scores)}, {"f": [(times[40], times[49]), (times[70], times[79])]}


def test_each_profile_picks_its_own_threshold() -> None:
    results, windows = profiles_corpus()
    table = evaluate_all_profiles(results, windows)
    assert list(table.index) == list(PROFILES)
    # standard: 0.9 -> 1 - 1 = 0; 0.5 -> 2 - 12 * 0.11 = 0.68 (best). null -2, perfect 2: 100 * 2.68 / 4 = 67.
    standard = table.loc["standard"]
    assert (standard["threshold"], standard["null"], standard["perfect"]) == (0.5, -2.0, 2.0)
    assert standard["raw"] == pytest.approx(0.68) and standard["normalized"] == pytest.approx(67.0)
    # 12 fired rows outside, 3 inside; both windows found: precision 3 / 15, recall 1, F1 2pr / (p + r) = 1 / 3.
    assert standard["precision"] == pytest.approx(0.2) and standard["recall"] == 1.0
    assert standard["f1"] == pytest.approx(1 / 3) and standard["tp"] == 3
    # reward_low_FP_rate: 0.5 -> 2 - 12 * 0.22 = -0.64 < 0, so 0.9 wins: raw 0, 100 * 2 / 4 = 50.
    low_fp = table.loc["reward_low_FP_rate"]
    assert low_fp["threshold"] == 0.9 and low_fp["raw"] == pytest.approx(0.0)
    assert low_fp["normalized"] == pytest.approx(50.0) and low_fp["f1"] == pytest.approx(2 / 3)
    # reward_low_FN_rate: 1.1 -> -4; 0.9 -> 1 - 2 = -1; 0.5 -> 0.68 (best); null -4: 100 * 4.68 / 6 = 78.
    low_fn = table.loc["reward_low_FN_rate"]
    assert (low_fn["threshold"], low_fn["null"]) == (0.5, -4.0)
    assert low_fn["normalized"] == pytest.approx(78.0)


def test_normalisation_is_0_for_never_firing_and_100_for_the_perfect_detector() -> None:
    times = {"a": stamps(200), "b": stamps(300)}
    spans = {"a": [(100, 119)], "b": [(80, 99), (200, 249)]}
    windows = {k: [(times[k][s], times[k][e]) for s, e in v] for k, v in spans.items()}
    starts = {k: [s for s, _ in v] for k, v in spans.items()}
    ends = {k: [e for _, e in v] for k, v in spans.items()}

    def corpus(rows: dict[str, list[int]]) -> dict[str, pd.DataFrame]:
        return {k: frame(times[k], fired(len(times[k]), rows[k])) for k in times}

    never = score_corpus(corpus({"a": [], "b": []}), windows)
    assert (never.threshold, never.raw, never.null, never.perfect, never.normalized) == (NEVER_FIRES, -3, -3, 3, 0)
    perfect = score_corpus(corpus(starts), windows)
    assert perfect.raw == pytest.approx(3.0) and perfect.normalized == pytest.approx(100.0)
    # Last rows: windows of 20, 20, 50 rows at -1/20, -1/20, -1/50 -> tanh(0.125) x 2 + tanh(0.05), / tanh(2.5).
    late = score_corpus(corpus(ends), windows)
    raw = (2 * math.tanh(0.125) + math.tanh(0.05)) / TANH_MAX
    assert late.raw == pytest.approx(raw) and late.normalized == pytest.approx(100 * (raw + 3) / 6)


def test_null_is_the_nab_null_detector_when_firing_everywhere_beats_silence() -> None:
    # 10 rows, window 0..8, no probation: always firing = 1 (row 0) + 0.11 * -tanh(2.5 / 8) (row 9) > -1.
    times = stamps(10)
    score = score_corpus({"a": frame(times, np.zeros(10))}, {"a": [(times[0], times[8])]}, probationary_percent=0)
    assert score.null == pytest.approx(1.0 - FP * math.tanh(0.3125))
    assert score.threshold == 0.0 and score.normalized == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, w: r["a"].drop(columns="anomaly_score"), r"\['anomaly_score'\] are missing"),
        (lambda r, w: r["a"].assign(anomaly_score=1.5), r"outside \[0, 1\]"),
        (lambda r, w: r["a"].assign(anomaly_score=np.nan), r"missing or outside \[0, 1\]"),
        (lambda r, w: r["a"].assign(timestamp=r["a"]["timestamp"].where(r["a"].index != 3)), "timestamps are missing"),
    ],
)
def test_bad_results_are_refused_with_a_clear_error(change: Callable[..., pd.DataFrame], message: str) -> None:
    results, windows = threshold_corpus()
    with pytest.raises(ValueError, match=message):
        score_corpus({"a": change(results, windows)}, windows)


def test_bad_labels_and_profiles_are_refused_with_a_clear_error() -> None:
    results, windows = threshold_corpus()
    with pytest.raises(ValueError, match=r"No labelled windows for \['b'\].*detector prefix"):
        score_corpus({**results, "b": results["a"]}, windows)
    later = pd.Timestamp("2030-01-01", tz="UTC")
    with pytest.raises(ValueError, match="holds no row"):
        score_corpus(results, {"a": [(later, later + pd.Timedelta("1h"))]})
    times = results["a"]["timestamp"]
    with pytest.raises(ValueError, match="overlaps"):
        score_corpus(results, {"a": [(times[10], times[20]), (times[15], times[25])]})
    with pytest.raises(ValueError, match="Unknown NAB profile"):
        score_corpus(results, windows, "strict")
    with pytest.raises(ValueError, match="No results"):
        score_corpus({}, windows)


def test_reads_the_nab_results_layout(tmp_path: Path) -> None:
    results, windows = threshold_corpus()
    nab_layout = results["a"].assign(value=1.0, label=0)
    nab_layout.to_csv(tmp_path / "mydetector_a.csv", index=False)
    pd.DataFrame({"Score": [1.0]}).to_csv(tmp_path / "mydetector_standard_scores.csv", index=False)
    read = read_results_directory(tmp_path, detector="mydetector")
    assert list(read) == ["a"] and read["a"]["timestamp"].dt.tz is not None
    assert score_corpus(read, windows).raw == pytest.approx(score_corpus(results, windows).raw)
    assert list(read_results_directory(tmp_path)) == ["mydetector_a"]  # no detector: the stem as it is
    results["a"].drop(columns="anomaly_score").to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(ValueError, match=r"broken\.csv.*anomaly_score"):
        read_results_directory(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_results_directory(tmp_path / "missing")


@pytest.mark.skipif(not nab.DEFAULT_NAB_DIR.exists(), reason=f"NAB data not found at {nab.DEFAULT_NAB_DIR}")
def test_real_aws_corpus_scores_in_a_sane_range() -> None:
    series = nab.read_directory(nab.DEFAULT_NAB_DIR)
    windows = nab.read_anomaly_windows(nab.DEFAULT_NAB_DIR)
    labelled = sum(len(v) for v in windows.values())
    results, perfect, silent = {}, {}, {}
    for name, data in series.items():
        deviation = (data["value"] - data["value"].rolling(288, min_periods=1).median()).abs()
        results[name] = frame(data["timestamp"], (deviation / deviation.max()).fillna(0.0).to_numpy())
        starts = data["timestamp"].searchsorted([start for start, _ in windows[name]])
        perfect[name] = frame(data["timestamp"], fired(len(data), [int(row) for row in starts]))
        silent[name] = frame(data["timestamp"], np.zeros(len(data)))
    table = evaluate_all_profiles(results, windows)
    assert table["perfect"].tolist() == [labelled] * 3 and labelled == 30
    assert table["null"].tolist() == [-30.0, -30.0, -60.0]  # no window lies in a probationary period
    assert ((table["normalized"] > 5) & (table["normalized"] < 100)).all()
    assert ((table["threshold"] > 0) & (table["threshold"] <= 1)).all()
    standard = score_corpus(results, windows)
    assert len(standard.per_file) == 17 and standard.raw == pytest.approx(table.loc["standard", "raw"])
    assert evaluate_all_profiles(perfect, windows)["normalized"].tolist() == pytest.approx([100.0] * 3)
    assert evaluate_all_profiles(silent, windows)["normalized"].tolist() == pytest.approx([0.0] * 3)


def test_cross_validation_chooses_on_the_other_files_only() -> None:
    """Candidate A finds f1's window and fires falsely on f2 and f3; B the opposite. In-sample, B wins (2 of 3
    files). Held out, each file is scored with the candidate chosen on the other two, which is always the
    one that misses it (f1 held out: B wins on f2, f3; f2 or f3 held out: a tie, the first candidate, A,
    is kept): a detector that cannot generalise scores below the null detector, and nothing about a
    held-out file leaks into its own choice."""
    from tauxcharge_assets.detection.nab_scoring import cross_validate

    n, times = 40, stamps(40)
    window = [(times[20], times[24])]
    windows = {"f1": window, "f2": window, "f3": window}
    good, bad = fired(n, [20]), fired(n, [30, 35])
    a = {"f1": frame(times, good), "f2": frame(times, bad), "f3": frame(times, bad)}
    b = {"f1": frame(times, bad), "f2": frame(times, good), "f3": frame(times, good)}
    result = cross_validate([a, b], windows, [["f1"], ["f2"], ["f3"]], probationary_percent=0.0)
    assert result.chosen == [1, 0, 0]
    assert result.normalized < 0 < score_corpus(b, windows, probationary_percent=0.0).normalized
    assert len(result.fold_normalized) == 3 and result.thresholds == [1.0, 1.0, 1.0]
    # One candidate that suits every file: cross-validation finds what in-sample finds.
    c = {"f1": frame(times, good), "f2": frame(times, good), "f3": frame(times, good)}
    both = cross_validate([c], windows, [["f1", "f2"], ["f3"]], probationary_percent=0.0)
    assert both.normalized == pytest.approx(score_corpus(c, windows, probationary_percent=0.0).normalized)


def test_a_clock_that_goes_back_is_scored_in_file_order() -> None:
    """A daylight-saving fall-back repeats an hour of stamps: rows stay in file order, a backward stamp is
    placed at the latest time seen, so the window is still a run of rows and a detection in it counts."""
    times = list(stamps(30))
    times = times[:20] + times[8:18]  # the clock goes back 12 rows at row 20, then runs on
    scores = fired(30, [25])  # fires on a row whose stamp (times[13]) was seen before
    window = [(times[24], times[26])]
    result = score_corpus(
        {"a": frame(pd.DatetimeIndex(times), scores)}, {"a": window}, threshold=0.5, probationary_percent=0
    )
    assert result.detected_windows == 0 and result.fp == 1  # the stamps of rows 24..26 were first seen at 12..14
    late = [(times[19], times[19] + pd.Timedelta(minutes=1))]  # rows 19..29 all sit at the latest time seen
    result = score_corpus(
        {"a": frame(pd.DatetimeIndex(times), scores)}, {"a": late}, threshold=0.5, probationary_percent=0
    )
    assert result.detected_windows == 1 and result.fp == 0
