"""The detection dev set: the simulator's wider anomaly kinds and series styles, and the dev-set scorer's arithmetic.

The anomaly checks compare each labelled stretch with what came just before it on the same name, so they
hold for any seed as long as the stretch is not overlapped by another anomaly (those are skipped).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data import nab
from tauxcharge_assets.data.simulator import ALL_ANOMALY_KINDS, ANOMALY_KINDS, SimulationSpec, simulate

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
END = pd.Timestamp("2026-03-02", tz="UTC")
DAY = 288
NEW_KINDS = tuple(kind for kind in ALL_ANOMALY_KINDS if kind not in ANOMALY_KINDS)


@pytest.fixture
def devset(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import detection_devset

    yield detection_devset
    sys.modules.pop("detection_devset", None)


def _isolated(labels: pd.DataFrame) -> Iterator[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """Labels with no other anomaly of their name within a day of them: their effect is theirs alone."""
    for label in labels.itertuples():
        others = labels[(labels["name"] == label.name) & (labels.index != label.Index)]
        near = (others["start"] <= label.end + pd.Timedelta(days=1)) & (
            others["end"] >= label.start - pd.Timedelta(days=1)
        )
        if not near.any():
            yield label.name, label.start, label.end


def _one_kind(kind: str, count_share: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Smooth names with anomalies of one kind only, past a probation of 30 %."""
    spec = SimulationSpec(
        n_names=8,
        days=14,
        end=END,
        seed=3,
        missing_rate=0.0,
        smooth_share=1.0,
        anomaly_kinds=(kind,),
        anomalies_per_name=1.0,
        anomaly_after=0.3,
        count_share=count_share,
    )
    sim = simulate(spec)
    assert len(sim.labels) > 0 and set(sim.labels["kind"]) == {kind}
    return sim.values, sim.labels


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_new_kind_is_labelled_and_visible(kind: str) -> None:
    values, labels = _one_kind(kind)
    checked = 0
    for name, start, end in _isolated(labels):
        column = values[name].to_numpy()
        s, e = values.index.get_loc(start), values.index.get_loc(end)
        if kind == "dip":  # traffic falls well below the hour before
            assert column[s : e + 1].mean() < 0.5 * column[s - 12 : s].mean()
        elif kind == "variance_burst":  # the spell's changes are much larger than those just before
            n = e + 1 - s
            assert np.diff(column[s : e + 1]).std() > 3 * np.diff(column[s - n : s]).std()
        elif kind == "missing_burst":  # a gap of at least an hour, labelled at the first point after it
            assert s == e and np.isnan(column[s - 12 : s]).all() and np.isfinite(column[s])
        else:  # the day's profile against the day before (weekdays only: the weekend changes the level)
            if (values.index[s - DAY : s + DAY].dayofweek >= 5).any():
                continue
            day, before = column[s : s + DAY], column[s - DAY : s]
            if kind == "daily_phase_shift":
                assert np.corrcoef(day, before)[0, 1] < 0.6
            else:
                assert day.std() < 0.5 * before.std()
        checked += 1
    assert checked > 0


def test_counts_are_unbounded_non_negative_integers_and_a_stuck_counter_repeats() -> None:
    values, labels = _one_kind("flat_line", count_share=1.0)
    finite = values.to_numpy()[np.isfinite(values.to_numpy())]
    assert finite.min() >= 0 and np.array_equal(finite, np.round(finite)) and finite.max() > 100
    isolated = list(_isolated(labels))
    assert isolated
    for name, start, end in isolated:
        before = values[name].iloc[values.index.get_loc(start) - 1]
        assert (values.loc[start:end, name] == before).all()


def test_anomaly_free_names_styles_and_lengths_follow_the_spec() -> None:
    spec = SimulationSpec(
        n_names=20,
        days=7,
        end=END,
        seed=4,
        missing_rate=0.0,
        anomaly_kinds=ALL_ANOMALY_KINDS,
        anomalies_per_name=2.0,
        anomaly_free_share=0.25,
        count_share=0.5,
        smooth_share=0.2,
        noisy_share=0.3,
        min_rows=500,
    )
    sim = simulate(spec)
    styles = sim.styles.set_index("name")
    assert styles["anomaly_free"].sum() == 5 and (styles["unit"] == "count").sum() == 10
    assert styles["noise"].value_counts().to_dict() == {"normal": 10, "noisy": 6, "smooth": 4}
    assert not set(sim.labels["name"]) & set(styles.index[styles["anomaly_free"]])
    assert styles["rows"].between(500, spec.steps).all() and styles["rows"].nunique() > 10
    for name, column in sim.values.items():
        rows = int(styles.at[name, "rows"])
        gaps = sim.labels.loc[(sim.labels["name"] == name) & (sim.labels["kind"] == "missing_burst")]
        assert column.first_valid_index() == sim.values.index[spec.steps - rows]
        if gaps.empty:
            assert column.count() == rows
        percent = column.dropna()
        if styles.at[name, "unit"] == "percent":
            assert percent.between(0, 100).all()
    first_rows = sim.labels.apply(lambda r: sim.values.index.get_loc(r["start"]), axis=1)
    allowed = spec.steps - sim.labels["name"].map(styles["rows"]) + DAY
    assert (first_rows >= allowed).all()  # anomalies leave each name a day of history


def test_the_spec_refuses_unknown_kinds_and_bad_shares() -> None:
    with pytest.raises(ValueError, match="anomaly_kinds"):
        SimulationSpec(anomaly_kinds=("meteor",))
    with pytest.raises(ValueError, match="shares"):
        SimulationSpec(smooth_share=0.7, noisy_share=0.5)


def test_the_written_set_is_nab_layout_with_integer_counts(devset: ModuleType, tmp_path: Path) -> None:
    spec = SimulationSpec(
        n_names=4, days=5, end=END, seed=2, missing_rate=0.0, count_share=0.5, anomalies_per_name=2.0, min_rows=900
    )
    sim = simulate(spec)
    anomalies = devset.write_devset(sim, tmp_path)
    windows = nab.read_anomaly_windows(tmp_path)
    assert set(windows) == set(sim.values.columns) and len(anomalies) == len(sim.labels)
    for name, unit in sim.styles[["name", "unit"]].itertuples(index=False):
        frame = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(frame) == sim.values[name].count()
        assert (frame["value"].dtype.kind == "i") == (unit == "count")
    assert (anomalies["window_start"] <= anomalies["start"]).all()
    assert (anomalies["start"] <= anomalies["window_end"]).all()


def test_nab_sized_windows_and_their_merge(devset: ModuleType) -> None:
    stamps = pd.date_range("2026-01-01", periods=1000, freq="5min", tz="UTC")
    windows = devset.nab_windows([stamps[10], stamps[500], stamps[520]], stamps[0], stamps[-1], 1000)
    half = pd.Timedelta(minutes=5 * 16)  # 10 % of 1,000 rows over 3 anomalies, halved: 16 rows
    assert windows == [(stamps[0], stamps[26]), (stamps[500] - half, stamps[500] + half), (stamps[504], stamps[536])]
    assert devset.merged(windows) == [(stamps[0], stamps[26]), (stamps[484], stamps[536])]


def _scores(rows: int, alarms: dict[int, float]) -> pd.DataFrame:
    scores = np.zeros(rows)
    for row, score in alarms.items():
        scores[row] = score
    return pd.DataFrame(
        {"timestamp": pd.date_range("2026-01-01", periods=rows, freq="5min", tz="UTC"), "anomaly_score": scores}
    )


def test_recall_false_alarms_and_quiet_clean_series_by_hand(devset: ModuleType) -> None:
    # 2,000 rows: NAB's probation is the first 300, so 1,700 rows (1700 * 5 min) are scored in each series.
    stamps = pd.date_range("2026-01-01", periods=2000, freq="5min", tz="UTC")
    results = {
        # in probation (ignored) | spike window, before it | 3 alarm rows, gaps of 25 and 45 min | alone | alone |
        # the dip, 10 min after its start
        "a": _scores(2000, {100: 1.0, 960: 0.9, 400: 0.85, 405: 0.7, 414: 0.95, 600: 0.9, 1200: 0.65, 1502: 0.7}),
        "b": _scores(2000, {1800: 0.7}),  # anomaly-free with one warning
        "c": _scores(2000, {}),  # anomaly-free and quiet
    }
    anomalies = pd.DataFrame(
        {
            "name": ["a", "a"],
            "kind": ["spike", "dip"],
            "start": [stamps[1000], stamps[1500]],
            "end": [stamps[1000], stamps[1505]],
            "window_start": [stamps[950], stamps[1450]],
            "window_end": [stamps[1050], stamps[1550]],
        }
    )
    weeks = 3 * 1700 * 5 / (7 * 24 * 60)

    found, series = devset.threshold_outcomes(results, anomalies, 0.6)
    assert found["found"].tolist() == [True, True] and found["found_during"].tolist() == [False, True]
    assert series.set_index("name")["false_alarms"].to_dict() == {"a": 3, "b": 1, "c": 0}
    summary = devset.summarise(found, series)
    assert summary["recall"] == 1.0 and summary["recall_during"] == 0.5
    assert summary["fp_per_week"] == pytest.approx(4 / weeks)
    assert summary["clean"] == 2 and summary["clean_quiet"] == 0.5

    found, series = devset.threshold_outcomes(results, anomalies, 0.8)
    assert found["found"].tolist() == [True, False] and not found["found_during"].any()
    assert series.set_index("name")["false_alarms"].to_dict() == {"a": 3, "b": 0, "c": 0}  # 400 and 414: 70 min
    summary = devset.summarise(found, series)
    assert summary["recall"] == 0.5 and summary["fp_per_week"] == pytest.approx(3 / weeks)
    assert summary["clean_quiet"] == 1.0


def test_alarm_rows_within_an_hour_are_one_episode(devset: ModuleType) -> None:
    at = pd.DatetimeIndex(pd.to_datetime(["2026-01-01 00:00", "2026-01-01 01:00", "2026-01-01 02:05"], utc=True))
    assert devset.episodes(at[:0]) == 0 and devset.episodes(at[:2]) == 1 and devset.episodes(at) == 2
