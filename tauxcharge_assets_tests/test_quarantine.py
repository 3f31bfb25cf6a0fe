"""The quarantine: every bad document that arrived in a tick, listed once by id with its reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, FilesystemIOManager, materialize

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data import quarantine
from tauxcharge_assets.data.cleaning import CleaningRules
from tauxcharge_assets.data.documents import from_sources
from tauxcharge_assets.defs.ingest.assets import cleaned_series, quarantined_documents, raw_es_extract
from tauxcharge_assets.defs.ingest.checks import quarantine_share_within_limit
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import bulk_write, scan_pit
from tauxcharge_assets.elastic.indices import drop_expired_daily
from tauxcharge_assets.window.rolling import add_documents, empty_window

END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
TICK_START = END - pd.Timedelta(minutes=5)
NAMES = [f"cell-{i}" for i in range(4)]


def iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def clean_documents() -> list[tuple[str, dict[str, Any]]]:
    """24 h of on-grid documents for every name, each arrived 20 s after its timestamp."""
    slots = pd.date_range(END - pd.Timedelta(days=1), END, freq="5min", inclusive="left")
    return [
        (f"ok-{name}-{k}", {"timestamp": iso(ts), "name": name, "value": 40.0 + k % 7, "ingested_at": arrived})
        for name in NAMES
        for k, ts in enumerate(slots)
        for arrived in [iso(ts + pd.Timedelta(seconds=20))]
    ]


ARRIVED = iso(END - pd.Timedelta(seconds=30))  # inside the last partition's arrival interval

def sent(minutes_before_end: float | None, name: str | None = "cell-0", value: Any = 10.0, **other: Any) -> dict:
    """A document that arrived in the last tick; ``None`` leaves a field out."""
    fields = {
        "timestamp": None if minutes_before_end is None else iso(END - pd.Timedelta(minutes=minutes_before_end)),
        "name": name,
        "value": value,
        "ingested_at": ARRIVED,
        **other,
    }
    return {key: v for key, v in fields.items() if v is not None}


# (id, document, expected reason or None): one of each thing a collector gets wrong.
BAD: list[tuple[str, dict[str, Any], str | None]] = [
    ("no-name", sent(5, name=None), "without_name"),
    ("empty-name", sent(5, name=""), "without_name"),
    ("no-timestamp", sent(None), "without_timestamp"),
    ("bad-timestamp", sent(None, timestamp="yesterday"), "without_timestamp"),
    ("too-late", sent(2 * 24 * 60, name="cell-1"), "too_late"),
    ("future", sent(-30 * 24 * 60, name="cell-1"), "future_timestamp"),
    ("string", sent(60, name="cell-2", value="n/a"), "non_numeric"),
    ("boolean", sent(65, name="cell-2", value=True), "non_numeric"),
    ("huge", sent(70, name="cell-2", value=1e308), "non_numeric"),
    ("no-value", sent(75, name="cell-2", value=None), "non_numeric"),
    ("negative", sent(80, name="cell-3", value=-4.0), "out_of_range"),
    ("overload", sent(85, name="cell-3", value=250.0), "out_of_range"),
    ("off-grid", sent(88, name="cell-3", value=30.0), "off_grid"),
    # A late correction of cell-0's slot of END - 2 h: it arrived last, so it is kept; the original is
    # not listed (it arrived, valid, in its own tick long before).
    ("correction", sent(120, value=99.0), "duplicate"),
    # A good document of this tick for a slot that had none: not listed.
    ("late-but-fine", sent(180, name="cell-9", value=5.0), None),
]


@pytest.fixture
def tick(es_url: str, tmp_path) -> Iterator[Any]:
    """Loads the clean day and the bad documents, and runs the ingest stage of the tick ending at END."""
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-quarantine-{uuid.uuid4().hex[:8]}")
    client = es.get_client()
    bulk_write(client, es.indices.metrics, [*clean_documents(), *((i, d) for i, d, _ in BAD)])

    def run(share: float = 0.02) -> Any:
        return materialize(
            [raw_es_extract, cleaned_series, quarantined_documents, quarantine_share_within_limit],
            partition_key=partition_key_ending_at(END),
            resources={"elasticsearch": es, "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "storage"))},
            instance=DagsterInstance.ephemeral(),
            run_config={**QUIET, "ops": {"quarantined_documents": {"config": {"max_rejected_share": share}}}},
            raise_on_error=False,
        )

    run.es = es  # type: ignore[attr-defined]
    yield run
    client.indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


def listed(es: ElasticsearchResource) -> dict[str, dict[str, Any]]:
    client = es.get_client()
    client.indices.refresh(index=f"{es.indices.quarantine}-*")
    hits = scan_pit(client, f"{es.indices.quarantine}-*", {"match_all": {}})
    return {hit["_source"]["document_id"]: hit["_source"] for hit in hits}


def test_every_bad_document_is_listed_once_with_its_reason(tick) -> None:
    result = tick()
    assert result.success
    entries = listed(tick.es)
    expected = {doc_id: reason for doc_id, _, reason in BAD if reason}
    assert {doc_id: entry["reason"] for doc_id, entry in entries.items()} == expected
    assert entries["correction"]["kept"] is True and "kept" in entries["correction"]["detail"]
    assert entries["string"]["sent"].count('"n/a"') == 1  # the value as the collector sent it
    summary = result.output_for_node("quarantined_documents")
    # Arrived in the tick: the bad documents and the last slot's clean ones (arrived 20 s after it).
    assert summary.arrived == len(BAD) + len(NAMES) and summary.rejected == 12
    assert summary.by_reason == {
        "without_name": 2, "without_timestamp": 2, "too_late": 1, "future_timestamp": 1,
        "non_numeric": 4, "out_of_range": 2, "off_grid": 1, "duplicate": 1,
    }  # fmt: skip
    # The index name says the day; the entry says the partition that examined the document.
    assert {entry["partition_key"] for entry in entries.values()} == {partition_key_ending_at(END)}

    rerun = tick()  # a rerun (or a backfill of the same partition) lists the same documents under the same ids
    assert rerun.success
    assert listed(tick.es) == entries


def test_the_check_fails_above_the_configured_share(tick) -> None:
    strict = tick(share=0.02).get_asset_check_evaluations()
    assert [(e.passed, e.severity) for e in strict] == [(False, AssetCheckSeverity.ERROR)]
    assert strict[0].metadata["rejected_share"].value == pytest.approx(12 / (len(BAD) + len(NAMES)))
    lenient = tick(share=0.9).get_asset_check_evaluations()
    assert [e.passed for e in lenient] == [True]


def test_the_preselection_misses_no_bad_document(tick) -> None:
    """Elasticsearch preselects suspects; classifying every arrival instead lists exactly the same documents."""
    result = tick()
    assert result.success
    es = tick.es
    client = es.get_client()
    window = result.output_for_node("raw_es_extract").window()
    rules = CleaningRules()
    every_arrival = quarantine.read_suspects(
        client, es.indices.metrics, {"bool": {"filter": [quarantine.arrivals_query(TICK_START, END)]}}
    )
    query = quarantine.suspects_query(window, rules, TICK_START, END)
    suspects = quarantine.read_suspects(client, es.indices.metrics, query)
    assert len(every_arrival.batch) == len(BAD) + len(NAMES) and len(suspects.batch) < len(every_arrival.batch)
    from_all = quarantine.entries(every_arrival, window, rules, es.indices.metrics, "k")
    from_suspects = quarantine.entries(suspects, window, rules, es.indices.metrics, "k")
    assert sorted(from_all, key=lambda e: e[0]) == sorted(from_suspects, key=lambda e: e[0])
    assert len(from_all) == len(BAD) - 1


def test_duplicates_say_which_one_is_kept() -> None:
    """Rule 5: the latest arrival wins, then the larger value; the other is listed as not kept."""
    at = END - pd.Timedelta(hours=1)
    sources = [
        {"timestamp": iso(at), "name": "a", "value": 20.0, "ingested_at": iso(at + pd.Timedelta(seconds=1))},
        {"timestamp": iso(at), "name": "a", "value": 10.0, "ingested_at": iso(at + pd.Timedelta(seconds=2))},
        {"timestamp": iso(at), "name": "b", "value": 30.0, "ingested_at": iso(at)},
        {"timestamp": iso(at), "name": "b", "value": 31.0, "ingested_at": iso(at)},
        {"timestamp": iso(at), "name": "c", "value": 50.0, "ingested_at": iso(at)},
    ]
    batch = from_sources(sources, ids=[f"d{i}" for i in range(len(sources))])
    window = add_documents(empty_window(END), batch)
    reasons, kept = quarantine.classify(batch, window, CleaningRules())
    assert list(reasons) == ["duplicate", "duplicate", "duplicate", "duplicate", None]
    assert list(kept) == [False, True, False, True, False]


def test_old_daily_indices_expire(es_resource: ElasticsearchResource) -> None:
    client = es_resource.get_client()
    base = es_resource.indices.quarantine
    today = pd.Timestamp("2026-11-30", tz="UTC")
    for day in ("2026-11-01", "2026-11-15", "2026-11-16", "2026-11-30"):
        client.indices.create(index=es_resource.indices.daily(base, pd.Timestamp(day)))
    assert drop_expired_daily(client, base, today, keep_days=14) == [f"{base}-2026.11.01", f"{base}-2026.11.15"]
    assert sorted(client.indices.get(index=f"{base}-*")) == [f"{base}-2026.11.16", f"{base}-2026.11.30"]
