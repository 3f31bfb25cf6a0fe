"""Incremental ticks must equal cold reads exactly: late, duplicated, tied, invalid and slow-to-index documents.

The unit tests run the tick logic against an in-memory reader that applies the same predicates as the
Elasticsearch queries; the integration test does it against the real server, tick after tick, while
documents keep arriving.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data.cleaning import CleaningRules, clean_series, clean_window
from tauxcharge_assets.data.documents import DocumentBatch, from_sources
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import bulk_write, deterministic_id
from tauxcharge_assets.window.incremental import ElasticsearchReader, cold_window, update_window
from tauxcharge_assets.window.shared_store import SharedWindowStore, window_bytes, window_from_bytes
from tauxcharge_assets.window.store import WindowStore

STEP = pd.Timedelta(minutes=5)
T0 = pd.Timestamp("2026-03-02 00:00", tz="UTC")


def iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def messy_documents(seed: int, n_names: int, start: pd.Timestamp, slots: int) -> list[dict]:
    """Documents with every defect the rules handle, plus arrival and indexing times."""
    rng = np.random.default_rng(seed)
    documents = []
    for i in range(n_names):
        name = f"n{i:03d}"
        active = range(0, slots // 3) if i == 0 else range(slots)  # n000 leaves the window, n001 joins late
        if i == 1:
            active = range(slots - 20, slots)
        for s in active:
            if rng.random() < 0.08:
                continue  # missing point
            ts = start + s * STEP + (pd.Timedelta(minutes=2) if rng.random() < 0.05 else pd.Timedelta(0))
            value: object = round(float(rng.uniform(0, 100)), 2)
            roll = rng.random()
            if roll < 0.03:
                value = "n/a"
            elif roll < 0.06:
                value = 150.0
            delay = pd.Timedelta(seconds=30)
            if rng.random() < 0.12:
                delay = pd.Timedelta(minutes=float(rng.uniform(10, 180)))  # late
            doc = {"id": f"{name}-{s}-0", "name": name, "timestamp": iso(ts), "value": value}
            arrived = ts + delay
            if rng.random() < 0.03:
                doc["name"] = None if rng.random() < 0.5 else ""
            if rng.random() < 0.02:
                arrived = ts + pd.Timedelta(seconds=30)  # no ingested_at: counts as arrived at its timestamp
            else:
                doc["ingested_at"] = iso(arrived)
            doc["indexed"] = arrived + pd.Timedelta(seconds=float(rng.uniform(0, 240)))  # searchable later
            documents.append(doc)
            for copy in range(1, 3):
                if rng.random() < 0.08:  # duplicates: later, or at the very same arrival time (a tie)
                    again = arrived + (pd.Timedelta(0) if rng.random() < 0.4 else pd.Timedelta(seconds=90 * copy))
                    documents.append(
                        doc
                        | {
                            "id": f"{name}-{s}-{copy}",
                            "value": round(float(rng.uniform(0, 120)), 2),
                            "ingested_at": iso(again),
                            "indexed": again + pd.Timedelta(seconds=5),
                        }
                    )
    return documents


@dataclass
class MemoryReader:
    """The Elasticsearch queries, evaluated on a list; ``now`` decides what has been indexed."""

    documents: list[dict]
    now: pd.Timestamp = T0

    def __post_init__(self) -> None:
        frame = pd.DataFrame(self.documents)
        self._ts = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        self._ingested = pd.to_datetime(frame.get("ingested_at"), utc=True, format="ISO8601")
        self._indexed = pd.to_datetime(frame["indexed"], utc=True)

    def _visible(self, start, end, as_of) -> pd.Series:
        arrived = self._ingested.isna() | (self._ingested <= as_of)
        return (self._indexed <= self.now) & (self._ts >= start) & (self._ts < end) & arrived

    def _recent(self, since) -> pd.Series:
        return (self._ts >= since) | (self._ingested > since)

    def _batch(self, selected: pd.Series, with_ids: bool) -> DocumentBatch:
        docs = [self.documents[i] for i in np.flatnonzero(selected.to_numpy())]
        sources = [{k: v for k, v in d.items() if k not in ("id", "indexed")} for d in docs]
        return from_sources(sources, [d["id"] for d in docs] if with_ids else None)

    def window(self, start, end, as_of, recent_since):
        visible, recent = self._visible(start, end, as_of), self._recent(recent_since)
        return self._batch(visible & ~recent, False), self._batch(visible & recent, True)

    def since(self, start, end, as_of, since):
        return self._batch(self._visible(start, end, as_of) & self._recent(since), True)


def assert_same_cleaning(incremental, cold, rules: CleaningRules | None = None) -> None:
    a, b = clean_window(incremental, rules), clean_window(cold, rules)
    pd.testing.assert_frame_equal(a.values, b.values, check_exact=True)
    pd.testing.assert_frame_equal(a.observed, b.observed, check_exact=True)
    assert a.counts == b.counts
    assert incremental.newest_ns == cold.newest_ns


def reference_clean(raw: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, rules: CleaningRules) -> pd.DataFrame:
    """The rules written the obvious way with pandas (sort, keep last, pivot), before gap filling."""
    numeric = pd.to_numeric(raw["value"], errors="coerce")
    has_name = raw["name"].notna() & (raw["name"].astype(str).str.len() > 0)
    valid = has_name & raw["timestamp"].notna() & numeric.between(rules.value_min, rules.value_max)
    kept = pd.DataFrame(
        {
            "name": raw["name"][valid].astype(str),
            "slot": raw["timestamp"][valid].dt.floor("5min"),
            "value": numeric[valid],
            "ingested_at": raw["ingested_at"][valid],
        }
    ).sort_values(["name", "slot", "ingested_at", "value"], na_position="first", kind="stable")
    last = kept.drop_duplicates(["name", "slot"], keep="last")
    slots = pd.date_range(start, end, freq="5min", inclusive="left", name="timestamp")
    names = sorted(set(raw["name"][has_name & raw["timestamp"].notna()].astype(str)))
    pivot = last.pivot(index="slot", columns="name", values="value").reindex(index=slots, columns=names)
    pivot.columns.name = "name"
    return pivot


def test_cleaning_matches_the_plain_pandas_rules() -> None:
    documents = messy_documents(seed=3, n_names=12, start=T0, slots=60)
    raw = pd.DataFrame([{k: d.get(k) for k in ("timestamp", "name", "value", "ingested_at")} for d in documents])
    raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    raw["ingested_at"] = pd.to_datetime(raw["ingested_at"], utc=True, format="ISO8601")
    end = T0 + 60 * STEP
    rules = CleaningRules(max_gap_fill=0)
    cleaned = clean_series(raw, T0, end, rules)
    expected = reference_clean(raw, T0, end, rules)
    pd.testing.assert_frame_equal(cleaned.values, expected, check_exact=True, check_freq=False)
    assert cleaned.counts["duplicates"] > 0 and cleaned.counts["out_of_range"] > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_ticks_equal_cold_reads(seed: int, tmp_path) -> None:
    steps = 36  # a 3 h window keeps the test fast; the logic does not depend on its length
    documents = messy_documents(seed, n_names=15, start=T0, slots=80)
    reader = MemoryReader(documents)
    store = WindowStore(tmp_path / "windows")
    modes = []
    for tick in range(40, 81):
        end = T0 + tick * STEP
        reader.now = end + pd.Timedelta(seconds=20)  # the tick runs just after its window closes
        window, report = update_window(reader, end, store, steps=steps)
        modes.append(report.mode)
        cold, _ = cold_window(reader, end, steps=steps)
        assert_same_cleaning(window, cold)
        assert_same_cleaning(window, cold, CleaningRules(value_min=10, value_max=120, max_gap_fill=5))
    assert modes[0] == "cold" and set(modes[1:]) == {"incremental"}
    assert len(list((tmp_path / "windows").glob("*.pkl"))) <= store.keep_latest + store.keep_written


def test_a_gap_in_the_ticks_and_a_missing_state_still_equal_cold(tmp_path) -> None:
    documents = messy_documents(5, n_names=8, start=T0, slots=80)
    reader = MemoryReader(documents, now=T0 + 200 * STEP)
    store = WindowStore(tmp_path / "windows")
    update_window(reader, T0 + 50 * STEP, store, steps=36)
    window, report = update_window(reader, T0 + 55 * STEP, store, steps=36)  # four ticks skipped
    assert report.mode == "incremental"
    assert_same_cleaning(window, cold_window(reader, T0 + 55 * STEP, steps=36)[0])
    window, report = update_window(reader, T0 + 75 * STEP, store, steps=36)  # beyond max_gap: cold
    assert report.mode == "cold" and "no stored window" in report.reason


def test_documents_indexed_after_the_previous_tick_are_picked_up_within_the_overlap(tmp_path) -> None:
    end = T0 + 40 * STEP
    documents = [
        {"id": f"a-{s}", "name": "a", "timestamp": iso(T0 + s * STEP), "value": 1.0 + s, "indexed": T0}
        | {"ingested_at": iso(T0 + s * STEP + pd.Timedelta(seconds=30))}
        for s in range(40)
    ]
    # arrived 2 minutes before the previous tick's end, but searchable only after that tick ran
    slow = {"id": "slow", "name": "b", "timestamp": iso(end - 30 * STEP), "value": 42.0}
    slow |= {"ingested_at": iso(end - STEP - pd.Timedelta(minutes=2)), "indexed": end - pd.Timedelta(seconds=10)}
    reader = MemoryReader([*documents, slow], now=end - STEP + pd.Timedelta(seconds=5))
    store = WindowStore(tmp_path / "windows")
    update_window(reader, end - STEP, store, steps=36)
    reader.now = end + pd.Timedelta(seconds=5)
    window, report = update_window(reader, end, store, steps=36)
    assert report.mode == "incremental" and "b" in set(window.names)
    assert_same_cleaning(window, cold_window(reader, end, steps=36)[0])


def test_incremental_equals_cold_against_elasticsearch(es_resource: ElasticsearchResource, tmp_path) -> None:
    client = es_resource.get_client()
    index = es_resource.indices.metrics
    end = pd.Timestamp("2026-03-04 00:00", tz="UTC")
    sim = simulate(SimulationSpec(n_names=12, days=1.5, end=end, seed=4, late_rate=0.2, duplicate_rate=0.1))
    documents = list(sim.documents())
    arrival = pd.to_datetime([d["ingested_at"] for _, d in documents], utc=True)
    reader = ElasticsearchReader(client, index)
    store = WindowStore(tmp_path / "windows")
    loaded = np.zeros(len(documents), bool)
    first = end - 10 * STEP
    for tick in range(11):
        tick_end = first + tick * STEP
        arrived = ~loaded & (arrival <= tick_end)
        bulk_write(client, index, [documents[i] for i in np.flatnonzero(arrived)])
        loaded |= arrived
        if tick == 5:  # a reload of documents already there (same ids): nothing may count twice
            bulk_write(client, index, [documents[i] for i in np.flatnonzero(loaded)[-500:]])
        window, report = update_window(reader, tick_end, store)
        assert report.mode == ("cold" if tick == 0 else "incremental")
        cold, read = cold_window(reader, tick_end)
        assert_same_cleaning(window, cold)
        assert report.documents_read < read / 10 or tick == 0
    late = clean_window(window).counts
    assert late["duplicates"] > 0 and late["documents"] > 0


def assert_same_window(a, b) -> None:
    for name in ("end_slot", "steps", "overlap_ns", "newest_ns"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("names", "present", "count", "value", "ingested", "off_grid", "slot_documents", "slot_unplaced",
                 "slot_non_numeric"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    for part in ("extra", "recent"):
        assert getattr(a, part).keys() == getattr(b, part).keys()
        for key, value in getattr(a, part).items():
            np.testing.assert_array_equal(value, getattr(b, part)[key], err_msg=f"{part}.{key}")


def test_a_window_round_trips_through_its_elasticsearch_bytes() -> None:
    """Every array and count of a messy window (duplicates in ``extra``, recent ids) comes back exactly."""
    reader = MemoryReader(messy_documents(3, n_names=10, start=T0, slots=60), now=T0 + 100 * STEP)
    window, _ = cold_window(reader, T0 + 50 * STEP, steps=36)
    assert len(window.extra["slot"]) and len(window.recent["id"])
    assert_same_window(window_from_bytes(window_bytes(window)), window)


def test_a_new_worker_starts_from_the_hourly_window_in_elasticsearch(
    es_resource: ElasticsearchResource, tmp_path
) -> None:
    """Ticks on one worker keep the window ending on the hour in Elasticsearch; a worker with no window of
    its own, 40 minutes later, starts from it and reads only what came since: the same cleaning as a cold
    read. A window whose rewrite died half-way is not used (no error); one older than ``max_gap`` ticks is
    not either."""
    client, index = es_resource.get_client(), es_resource.indices.metrics
    end = pd.Timestamp("2026-03-04 00:00", tz="UTC")
    sim = simulate(SimulationSpec(n_names=10, days=1.2, end=end, seed=8, late_rate=0.2, duplicate_rate=0.1))
    bulk_write(client, index, list(sim.documents()))
    reader = ElasticsearchReader(client, index)
    shared = SharedWindowStore(client, es_resource.indices.window_state, index)
    for tick_end in (end - 14 * STEP, end - 13 * STEP, end - 12 * STEP):  # the last one ends on the hour
        update_window(reader, tick_end, WindowStore(tmp_path / "first"), shared=shared)
    later = end - 4 * STEP
    window, report = update_window(reader, later, WindowStore(tmp_path / "new"), shared=shared)
    assert report.mode == "incremental" and "a new worker" in report.reason, report
    cold, read = cold_window(reader, later)
    assert_same_cleaning(window, cold)
    assert report.documents_read < read / 5
    hour = end - 12 * STEP
    assert shared.latest_before(hour + STEP).end == hour
    # A rewrite of that window that died after its first chunk (of 2): its chunk 0 replaced the good one.
    torn = {"key": index, "window_end": hour.isoformat(), "chunk": 0, "chunks": 2, "digest": "torn", "state": "eA=="}
    chunk_id = deterministic_id("window-state", index, hour.isoformat(), 0)
    assert bulk_write(client, es_resource.indices.window_state, [(chunk_id, torn)])
    assert shared.latest_before(hour + STEP) is None  # neither write is whole: not used, no error
    later_end = (hour + STEP).isoformat()  # whole and its digest right, but not a window: skipped, no error
    garbage = {**torn, "window_end": later_end, "chunks": 1, "digest": hashlib.sha256(b"eA==").hexdigest()}
    assert bulk_write(client, es_resource.indices.window_state, [("garbage", garbage)])
    assert shared.latest_before(hour + 2 * STEP) is None
    _, report = update_window(reader, end + 3 * STEP, WindowStore(tmp_path / "newer"), shared=shared)
    assert report.mode == "cold"


def test_the_store_keeps_the_live_chain_and_the_last_writes(tmp_path) -> None:
    reader = MemoryReader(messy_documents(7, n_names=3, start=T0, slots=60), now=T0 + 100 * STEP)
    store = WindowStore(tmp_path / uuid.uuid4().hex, keep_latest=2, keep_written=1)
    for tick in (50, 51, 52, 40, 41):  # live ticks, then a backfill of older partitions
        update_window(reader, T0 + tick * STEP, store, steps=12)
    kept = sorted(path.stem for path in store.root.glob("*.pkl"))
    assert kept == ["20260302T0325", "20260302T0415", "20260302T0420"]


def test_the_retention_rule_keeps_the_latest_and_the_last_written_files(tmp_path) -> None:
    import os

    from tauxcharge_assets.window.retention import outside_retention

    written_at = {  # live ticks, then a backfill of older partitions written most recently
        "2026-03-02-10:00": 100,
        "2026-03-02-10:05": 200,
        "2026-03-02-10:10": 300,
        "2026-03-01-08:00": 400,
        "2026-03-01-08:05": 500,
    }
    for key, mtime in written_at.items():
        (tmp_path / key).write_bytes(b"x")
        os.utime(tmp_path / key, (mtime, mtime))
    outside = outside_retention(tmp_path.iterdir(), keep_latest=2, keep_written=1)
    assert [p.name for p in outside] == ["2026-03-01-08:00", "2026-03-02-10:00"]


def test_the_io_manager_applies_the_retention_rule_to_partitioned_outputs(tmp_path) -> None:
    """Through Dagster: five partitions materialized (three live, then two of a backfill) leave the
    two latest keys and the last written one; the unpartitioned output is never pruned."""
    from dagster import StaticPartitionsDefinition, asset, materialize

    from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager

    keys = ["2026-03-02-10:00", "2026-03-02-10:05", "2026-03-02-10:10", "2026-03-01-08:00", "2026-03-01-08:05"]

    @asset(partitions_def=StaticPartitionsDefinition(keys))
    def tick_output(context) -> str:
        return context.partition_key

    @asset
    def model_output() -> int:
        return 1

    manager = RetainedFilesystemIOManager(base_dir=str(tmp_path), keep_latest=2, keep_written=1, keep_recent_s=0)
    for key in keys:
        assert materialize([tick_output], partition_key=key, resources={"io_manager": manager}).success
    assert materialize([model_output], resources={"io_manager": manager}).success
    kept = sorted(p.name for p in (tmp_path / "tick_output").iterdir())
    assert kept == ["2026-03-01-08:05", "2026-03-02-10:05", "2026-03-02-10:10"]
    assert (tmp_path / "model_output").is_file()
