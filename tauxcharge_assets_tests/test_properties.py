"""Property-based tests (hypothesis): the cleaning rules, incremental-equals-cold, and causal scores.

Each property is checked on documents hypothesis makes up and shrinks when one fails, against a
plain reference (the rules written the obvious way with pandas, a cold read, a prefix of the data).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tauxcharge_assets.data.cleaning import CleaningRules, clean_series
from tauxcharge_assets.data.documents import from_sources
from tauxcharge_assets.data.quarantine import classify
from tauxcharge_assets.detection.detector import DetectorConfig, score_matrix
from tauxcharge_assets.window.incremental import cold_window, update_window
from tauxcharge_assets.window.rolling import add_documents, empty_window
from tauxcharge_assets.window.store import WindowStore
from tauxcharge_assets_tests.test_incremental import MemoryReader, assert_same_cleaning, reference_clean

T0 = pd.Timestamp("2026-11-02 00:00", tz="UTC")
STEP = pd.Timedelta(minutes=5)
SLOTS = 24
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


values = st.one_of(
    st.floats(min_value=-50, max_value=150, allow_nan=False).map(lambda v: round(v, 2)),
    st.sampled_from(["n/a", "NaN", None, "", "42.5"]),
)


@st.composite
def documents(draw: st.DrawFn, slots: int = SLOTS) -> list[dict[str, Any]]:
    """Metric documents with every defect a collector makes: missing or empty names, off-grid times,
    non-numbers, values out of range, duplicates (ties included), late arrivals, no ``ingested_at``."""
    result = []
    for i in range(draw(st.integers(0, 40))):
        slot = draw(st.integers(0, slots - 1))
        ts = T0 + slot * STEP + pd.Timedelta(seconds=draw(st.sampled_from([0, 0, 0, 90, 299])))
        stamped = draw(st.integers(0, 9)) > 0  # one in ten has no ``ingested_at``: it arrived at its timestamp
        delay = pd.Timedelta(seconds=draw(st.sampled_from([30, 30, 0, 600, 3600])) if stamped else 0)
        result.append(
            {
                "id": f"d{i}",
                "name": draw(st.sampled_from(["a", "b", "c", None, ""])),
                "timestamp": iso(ts),
                "value": draw(values),
                "ingested_at": iso(ts + delay) if stamped else None,
                "indexed": ts + delay + pd.Timedelta(seconds=draw(st.integers(0, 240))),  # searchable a little later
            }
        )
    return result


def frame(docs: list[dict[str, Any]]) -> pd.DataFrame:
    raw = pd.DataFrame(
        [{k: d.get(k) for k in ("timestamp", "name", "value", "ingested_at")} for d in docs],
        columns=["timestamp", "name", "value", "ingested_at"],
    )
    raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    raw["ingested_at"] = pd.to_datetime(raw["ingested_at"], utc=True, format="ISO8601")
    return raw


@PROPERTY
@given(documents(), st.randoms(use_true_random=False))
def test_cleaning_follows_its_rules_whatever_the_documents_and_their_order(docs: list[dict], random: Any) -> None:
    end = T0 + SLOTS * STEP
    rules = CleaningRules(max_gap_fill=0)
    cleaned = clean_series(frame(docs), T0, end, rules)
    expected = reference_clean(frame(docs), T0, end, rules)
    pd.testing.assert_frame_equal(cleaned.values, expected, check_exact=True, check_freq=False)
    assert cleaned.counts["documents"] == len(docs)
    shuffled = list(docs)
    random.shuffle(shuffled)
    again = clean_series(frame(shuffled), T0, end, rules)  # the read order never decides a value
    pd.testing.assert_frame_equal(again.values, cleaned.values, check_exact=True)
    assert again.counts == cleaned.counts


@PROPERTY
@given(documents())
def test_the_quarantine_lists_exactly_what_the_cleaning_drops_or_rewrites(docs: list[dict]) -> None:
    """Every document the cleaning does not take as is has a reason; the counts of both agree."""
    end = T0 + SLOTS * STEP
    sources = [{k: d.get(k) for k in ("timestamp", "name", "value", "ingested_at")} for d in docs]
    batch = from_sources(sources, ids=[d["id"] for d in docs])
    window = add_documents(empty_window(end, steps=SLOTS), batch)
    rules = CleaningRules()
    reasons, kept = classify(batch, window, rules)
    counts = clean_series(frame(docs), T0, end, rules).counts
    listed = pd.Series(reasons, dtype=object).value_counts()
    assert listed.get("without_name", 0) == counts["without_name_or_timestamp"]
    assert listed.get("non_numeric", 0) == counts["non_numeric"]
    assert listed.get("out_of_range", 0) == counts["out_of_range"]
    assert listed.get("off_grid", 0) == counts["off_grid"]
    # Every duplicate the cleaning dropped is listed: as not kept, or as off-grid (its first reason).
    dropped = int((reasons == "duplicate").sum() - kept.sum())
    assert dropped <= counts["duplicates"] <= dropped + listed.get("off_grid", 0)
    assert kept.sum() <= len({(d["name"], d["timestamp"][:16]) for d in docs})  # at most one kept per slot


@PROPERTY
@given(documents(slots=40))
def test_an_incremental_tick_equals_a_cold_read(docs: list[dict]) -> None:
    """Tick by tick from a stored window, or all at once: the same window, for any arrival pattern
    (late documents, ties, documents searchable up to 4 minutes after they arrived)."""
    if not docs:
        docs = [{"id": "x", "name": "a", "timestamp": iso(T0), "value": 1.0, "ingested_at": None, "indexed": T0}]
    reader = MemoryReader(docs)
    with tempfile.TemporaryDirectory() as folder:  # not tmp_path: hypothesis reruns the body, not the fixture
        store = WindowStore(Path(folder))
        for tick in range(12, 41, 2):
            end = T0 + tick * STEP
            reader.now = end + pd.Timedelta(seconds=20)
            window, _ = update_window(reader, end, store, steps=12)
            cold, _ = cold_window(reader, end, steps=12)
            assert_same_cleaning(window, cold)


@PROPERTY
@given(st.integers(1, 400), st.integers(1, 3), st.integers(0, 2**32 - 1), st.integers(0, 400))
def test_scores_are_causal(slots: int, names: int, seed: int, cut: int) -> None:
    """A score depends only on the past: the scores of the first ``cut`` slots are the same bits
    whether or not the later slots exist (no look-ahead, no normalisation over the whole series)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(10, 90, names)
    values = level + rng.normal(0, 5, (slots, names)) + np.where(rng.random((slots, names)) < 0.02, 40, 0)
    values[rng.random((slots, names)) < 0.05] = np.nan
    values[:, 0] = np.where(rng.random(slots) < 0.3, 50.0, values[:, 0])  # repeats feed the stuck channel
    p50 = values + rng.normal(0, 3, values.shape)
    p10, p90 = p50 - 6, p50 + 6
    config = DetectorConfig()
    full = score_matrix(values, p10, p50, p90, config, first_slot=1000)
    cut = min(cut, slots)
    prefix = score_matrix(values[:cut], p10[:cut], p50[:cut], p90[:cut], config, first_slot=1000)
    np.testing.assert_array_equal(full[:cut], prefix.reshape(cut, names))
