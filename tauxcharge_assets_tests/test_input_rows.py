"""Real files as they come: clocks that go back, repeated stamps, gaps, other sampling rates, offsets.

Each is read without reordering, counted in an ``InputReport`` and described in one line; only what
cannot be read (a timestamp, a value, a column) is refused, with one line naming the file. The last
tests run the ``detect`` path itself on a daylight-saving file (a tiny LSTM, trained once per module).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data import nab
from tauxcharge_assets.detection import detector, labelled_files
from tauxcharge_assets.detection.input_rows import (
    InputReport,
    LabelledInput,
    plain_duration,
    read_labelled_csv,
)
from tauxcharge_assets.model.forecaster import ForecastModel
from tauxcharge_assets.model.network import ModelHyperparameters

FIVE = pd.Timedelta(minutes=5)


def write(path: Path, stamps: list[str], values: list[float] | None = None) -> Path:
    values = values if values is not None else [float(i) for i in range(len(stamps))]
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    return path


def clock(start: str, rows: int, every: str = "5min") -> list[str]:
    """Naive local-clock strings, as a collector without a time zone writes them."""
    return list(pd.date_range(start, periods=rows, freq=every).strftime("%Y-%m-%d %H:%M:%S"))


def read_back(path: Path, stamps: list[str]) -> LabelledInput:
    """Read ``path`` and check what every reader must keep: the rows, in file order, as written."""
    read = read_labelled_csv(path)
    assert read.frame["timestamp"].tolist() == stamps
    assert read.frame["value"].tolist() == [float(i) for i in range(len(stamps))]
    assert read.frame["value"].dtype == np.float64
    assert len(read.stamps) == len(stamps)
    return read


def test_daylight_saving_fall_back_repeats_an_hour(tmp_path: Path) -> None:
    stamps = clock("2026-10-25 00:00", 24) + clock("2026-10-25 01:00", 24)  # 01:00-01:55 twice
    report = read_back(write(tmp_path / "dst.csv", stamps), stamps).report
    assert (report.rows, report.repeated_timestamps, report.steps_back) == (48, 12, 1)
    assert report.largest_step_back == pd.Timedelta(hours=1) and report.hour_shift
    assert (report.gaps, report.off_grid_rows, report.typical_step) == (0, 0, FIVE)
    assert report.needed_handling
    assert report.summary() == (
        "dst.csv: 48 rows, sampled every 5 min; 12 repeated timestamps and 1 step back of 1 h "
        "(daylight saving?) scored in file order"
    )


def test_daylight_saving_spring_forward_skips_an_hour(tmp_path: Path) -> None:
    stamps = clock("2026-03-29 00:00", 24) + clock("2026-03-29 03:00", 12)  # 01:55, then 03:00
    report = read_back(write(tmp_path / "spring.csv", stamps), stamps).report
    assert (report.gaps, report.longest_gap, report.steps_back, report.hour_shift) == (
        1,
        pd.Timedelta(minutes=65),
        0,
        True,
    )
    assert report.summary() == "spring.csv: 36 rows, sampled every 5 min; 1 gap of 1 h 5 min (daylight saving?)"


def test_a_collector_restart_jumps_back_20_minutes(tmp_path: Path) -> None:
    stamps = clock("2026-01-05 10:00", 7) + clock("2026-01-05 10:15", 7)  # 10:30, then 10:15 instead of 10:35
    report = read_back(write(tmp_path / "restart.csv", stamps), stamps).report
    assert (report.repeated_timestamps, report.steps_back, report.largest_step_back) == (
        4,
        1,
        pd.Timedelta(minutes=20),
    )
    assert not report.hour_shift
    assert report.summary() == (
        "restart.csv: 14 rows, sampled every 5 min; 4 repeated timestamps and 1 step back of 20 min "
        "scored in file order"
    )


def test_two_steps_back_give_the_largest(tmp_path: Path) -> None:
    stamps = clock("2026-01-05 10:00", 4) + clock("2026-01-05 10:05", 4) + clock("2026-01-05 09:00", 4)
    report = read_back(write(tmp_path / "back.csv", stamps), stamps).report
    assert (report.steps_back, report.largest_step_back) == (2, pd.Timedelta(hours=1, minutes=25))  # 10:20 -> 09:00
    assert report.summary() == (
        "back.csv: 12 rows, sampled every 5 min; 3 repeated timestamps and 2 steps back, largest 1 h 25 min "
        "scored in file order"
    )


def test_repeated_timestamps_in_a_row(tmp_path: Path) -> None:
    base = clock("2026-01-05 00:00", 4)
    stamps = [base[0], base[1], base[1], base[2], base[2], base[2], base[3]]
    report = read_back(write(tmp_path / "twice.csv", stamps), stamps).report
    assert (report.repeated_timestamps, report.steps_back, report.gaps) == (3, 0, 0)
    assert report.summary() == "twice.csv: 7 rows, sampled every 5 min; 3 repeated timestamps scored in file order"


def test_gaps_are_counted_and_the_longest_given(tmp_path: Path) -> None:
    stamps = clock("2026-01-05 00:00", 13) + clock("2026-01-05 03:00", 7)  # 01:00 -> 03:00
    report = read_back(write(tmp_path / "gap.csv", stamps), stamps).report
    assert (report.gaps, report.longest_gap, report.repeated_timestamps) == (1, pd.Timedelta(hours=2), 0)
    assert report.summary() == "gap.csv: 20 rows, sampled every 5 min; 1 gap of 2 h"
    more = stamps + clock("2026-01-05 03:45", 3) + clock("2026-01-05 04:30", 3)
    report = read_back(write(tmp_path / "gaps.csv", more), more).report
    assert report.summary() == "gaps.csv: 26 rows, sampled every 5 min; 3 gaps, longest 2 h"


@pytest.mark.parametrize(("every", "words"), [("1min", "1 min"), ("10min", "10 min")])
def test_other_sampling_rates_are_scored_per_row(tmp_path: Path, every: str, words: str) -> None:
    stamps = clock("2026-01-05 00:00", 30, every)
    report = read_back(write(tmp_path / "rate.csv", stamps), stamps).report
    assert report.typical_step == pd.Timedelta(every)
    assert (report.gaps, report.off_grid_rows, report.repeated_timestamps, report.steps_back) == (0, 0, 0, 0)
    assert report.needed_handling  # not the detector's 5 minutes: worth a line
    assert report.summary() == f"rate.csv: 30 rows, sampled every {words} (scored one row per step)"


def test_rows_off_the_grid(tmp_path: Path) -> None:
    stamps = clock("2026-01-05 00:00", 6)
    stamps[3] = "2026-01-05 00:16:00"
    report = read_back(write(tmp_path / "jitter.csv", stamps), stamps).report
    assert (report.off_grid_rows, report.gaps, report.steps_back) == (1, 0, 0)
    assert report.summary() == (
        "jitter.csv: 6 rows, sampled every 5 min; 1 row off the grid (every 5 min from the first timestamp)"
    )


@pytest.mark.parametrize("start", ["2026-10-25 00:00", "2026-03-29 00:00"])  # Paris: fall back, spring forward
def test_iso_offsets_across_a_daylight_saving_change_are_a_plain_grid(tmp_path: Path, start: str) -> None:
    utc = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=60, freq="5min")
    stamps = [stamp.isoformat() for stamp in utc.tz_convert("Europe/Paris")]
    assert {stamp[-6:] for stamp in stamps} == {"+01:00", "+02:00"}
    read = read_back(write(tmp_path / "iso.csv", stamps), stamps)
    assert read.stamps.tolist() == utc.tolist()
    assert not read.report.needed_handling
    assert read.report.summary() == "iso.csv: 60 rows, sampled every 5 min"


def test_a_real_nab_file_with_a_daylight_saving_artefact() -> None:
    """NAB's own ec2_disk_write_bytes_1ef3de: 12 rows stamped 03:00 after the spring-forward gap."""
    path = nab.DEFAULT_NAB_DIR / "ec2_disk_write_bytes_1ef3de.csv"
    assert path.exists(), f"{path}: the NAB data must sit in ../shared beside the repository"
    report = read_labelled_csv(path).report
    assert report.summary() == (
        "ec2_disk_write_bytes_1ef3de.csv: 4730 rows, sampled every 5 min; 11 repeated timestamps scored in "
        "file order; 1 gap of 1 h 1 min; 12 rows off the grid (every 5 min from the first timestamp)"
    )


def test_one_row_and_one_repeated_stamp(tmp_path: Path) -> None:
    one = read_back(write(tmp_path / "one.csv", ["2026-01-05 00:00:00"]), ["2026-01-05 00:00:00"]).report
    assert one.summary() == "one.csv: 1 row, sampling unknown" and not one.needed_handling
    same = ["2026-01-05 00:00:00"] * 3
    report = read_back(write(tmp_path / "same.csv", same), same).report
    assert report.typical_step is None and report.repeated_timestamps == 2
    assert report.summary() == (
        "same.csv: 3 rows, sampling unknown (no two timestamps differ); 2 repeated timestamps scored in file order"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,value\n2026-01-05 00:00:00,1\nnot a time,2\n", "1 unreadable timestamp(s), e.g. ['not a time']"),
        ("timestamp,value\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,abc\n", "1 non-numeric value(s), e.g. ['abc']"),
        ("time,value\n2026-01-05 00:00:00,1\n", "missing column(s) ['timestamp']"),
        ("timestamp,value\n", "no rows"),
    ],
)
def test_what_cannot_be_read_is_refused_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    for read in (read_labelled_csv, labelled_files.read_input, nab.read_series):
        with pytest.raises(ValueError) as refused:
            read(path)
        text = str(refused.value)
        assert "\n" not in text and text.startswith(f"{path}: ") and message in text


def test_the_loaders_keep_file_order(tmp_path: Path) -> None:
    stamps = clock("2026-10-25 00:00", 24) + clock("2026-10-25 01:00", 24)
    path = write(tmp_path / "dst.csv", stamps)
    assert labelled_files.read_input(path)["timestamp"].tolist() == stamps
    series = nab.read_series(path)
    assert list(series.columns) == ["timestamp", "value"] and str(series["timestamp"].dt.tz) == "UTC"
    assert series["timestamp"].tolist() == pd.to_datetime(pd.Series(stamps), utc=True).tolist()


@pytest.mark.parametrize(
    ("span", "words"),
    [
        (pd.Timedelta(hours=1), "1 h"),
        (pd.Timedelta(minutes=65), "1 h 5 min"),
        (pd.Timedelta(days=2, hours=3, minutes=4), "2 days 3 h"),
        (pd.Timedelta(days=1), "1 day"),
        (pd.Timedelta(seconds=30), "30 s"),
        (pd.Timedelta(milliseconds=500), "0.5 s"),
    ],
)
def test_plain_durations(span: pd.Timedelta, words: str) -> None:
    assert plain_duration(span) == words


# --- through detect_directory ------------------------------------------------------------------------

HP = ModelHyperparameters(
    window=24, patch=12, horizon=2, lstm_units=4, embedding_dim=2, dense_units=8, epochs=1, batch_size=64
)
ROWS = 600


def values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (50 + 10 * np.sin(2 * np.pi * np.arange(ROWS) / 288) + rng.normal(0, 1, ROWS)).round(3)


def paris_clock() -> list[str]:
    """600 five-minute rows over the 2026 fall-back, written in Paris local time without an offset."""
    utc = pd.date_range(pd.Timestamp("2026-10-24 12:00", tz="UTC"), periods=ROWS, freq="5min")
    return list(utc.tz_convert("Europe/Paris").strftime("%Y-%m-%d %H:%M:%S"))


@pytest.fixture(scope="module")
def model() -> ForecastModel:
    stamps = clock("2026-01-05", ROWS)
    return labelled_files.fit_detector_model({"calm": pd.DataFrame({"timestamp": stamps, "value": values(1)})}, HP)


def test_a_daylight_saving_file_is_scored_row_for_row(tmp_path: Path, model: ForecastModel) -> None:
    """One result row per input row, in file order; the rows are the steps, so the same values on a
    regular clock from the same first stamp get the very same scores."""
    stamps = paris_clock()
    regular = clock(stamps[0], ROWS)
    assert stamps[0] == regular[0] and stamps != regular
    for folder, rows in (("dst", stamps), ("regular", regular)):
        (tmp_path / folder).mkdir()
        pd.DataFrame({"timestamp": rows, "value": values(2)}).to_csv(tmp_path / folder / "paris.csv", index=False)
    reports: list[InputReport] = []
    written = labelled_files.detect_directory(
        tmp_path / "dst", tmp_path / "out", detector.DetectorConfig(), HP, model=model, on_read=reports.append
    )
    result = pd.read_csv(written["paris"], dtype={"timestamp": str})
    assert list(result.columns) == ["timestamp", "value", "anomaly_score"]
    assert result["timestamp"].tolist() == stamps
    assert np.allclose(result["value"].to_numpy(), values(2))
    assert result["anomaly_score"].between(0.0, 1.0).all()
    assert [(r.name, r.repeated_timestamps, r.steps_back, r.hour_shift) for r in reports] == [
        ("paris.csv", 12, 1, True)
    ]
    assert reports[0].summary().startswith("paris.csv: 600 rows, sampled every 5 min; 12 repeated timestamps")
    same = labelled_files.detect_directory(
        tmp_path / "regular", tmp_path / "out_regular", detector.DetectorConfig(), HP, model=model
    )
    scores = pd.read_csv(same["paris"])["anomaly_score"].to_numpy()
    assert np.allclose(result["anomaly_score"].to_numpy(), scores, rtol=0, atol=1e-6)
