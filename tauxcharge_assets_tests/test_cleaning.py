import numpy as np
import pandas as pd

from tauxcharge_assets.data.cleaning import CleaningRules, clean_series, fill_short_gaps

START = pd.Timestamp("2026-01-05 00:00", tz="UTC")
END = START + pd.Timedelta(minutes=60)


def raw(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["timestamp", "name", "value", "ingested_at"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True)
    return frame


def at(minutes: float) -> pd.Timestamp:
    return START + pd.Timedelta(minutes=minutes)


def test_every_rule_is_counted_and_applied() -> None:
    rows = [(at(m), "a", 10.0 + m, at(m + 1)) for m in range(0, 60, 5)]
    rows += [
        (at(5), "a", 99.0, at(30)),  # duplicate that arrived later: wins
        (at(10), "b", "n/a", at(11)),  # not a number
        (at(15), "b", 250.0, at(16)),  # out of range
        (at(22), "b", 40.0, at(23)),  # off grid: floored to 20
        (None, "b", 1.0, at(1)),  # no timestamp
        (at(25), None, 1.0, at(26)),  # no name
    ]
    cleaned = clean_series(raw(rows), START, END)
    counts = cleaned.counts
    assert counts["documents"] == 18
    assert counts["non_numeric"] == 1
    assert counts["out_of_range"] == 1
    assert counts["off_grid"] == 1
    assert counts["duplicates"] == 1
    assert counts["without_name_or_timestamp"] == 2
    assert cleaned.names == ["a", "b"]
    assert cleaned.values.loc[at(5), "a"] == 99.0
    assert cleaned.values.loc[at(20), "b"] == 40.0
    assert counts["observed_points"] == 12 + 1
    assert counts["grid_points"] == 24
    # b has one observed point: nothing to interpolate between, so 11 points stay missing
    assert counts["missing_after_cleaning"] == 11
    assert not cleaned.values.index.duplicated().any()


def test_short_gaps_are_filled_long_ones_kept() -> None:
    values = np.array([1, np.nan, np.nan, 4, np.nan, np.nan, np.nan, np.nan, 9, np.nan], dtype=float)
    frame = pd.DataFrame({"x": values})
    filled, count = fill_short_gaps(frame, max_gap=3)
    assert count == 2
    np.testing.assert_allclose(filled["x"].to_numpy()[:4], [1, 2, 3, 4])
    assert filled["x"].iloc[4:8].isna().all()  # a 4-point gap is longer than max_gap
    assert np.isnan(filled["x"].iloc[9])  # a trailing gap has no right neighbour


def test_value_range_is_configurable() -> None:
    rows = [(at(0), "a", 150.0, at(1)), (at(5), "a", 50.0, at(6))]
    strict = clean_series(raw(rows), START, END)
    loose = clean_series(raw(rows), START, END, CleaningRules(value_max=200.0))
    assert strict.counts["out_of_range"] == 1
    assert loose.counts["out_of_range"] == 0
