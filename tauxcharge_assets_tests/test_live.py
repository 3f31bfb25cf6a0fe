"""``simulate --live``: current data keeps arriving, each document written once."""

from __future__ import annotations

import itertools
import uuid

import pandas as pd

from tauxcharge_assets.cli.live import Arrivals, live_simulation
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import scan_pit
from tauxcharge_assets_tests.test_cli import run_cli

STARTED = pd.Timestamp("2026-11-30 10:02:30", tz="UTC")


def test_rounds_write_every_arrival_once_and_nothing_before_since() -> None:
    simulation = live_simulation(names=3, seed=1, started=STARTED, history_days=1, days_ahead=1)
    arrivals = Arrivals(simulation.documents())
    since = STARTED - pd.Timedelta(hours=2)
    cuts = [pd.Timestamp(0, tz="UTC"), STARTED, STARTED + pd.Timedelta(minutes=5), STARTED + pd.Timedelta(minutes=10)]
    rounds = [arrivals.between(after, until, since) for after, until in itertools.pairwise(cuts)]
    ids = [doc_id for written in rounds for doc_id, _ in written]
    assert len(ids) == len(set(ids))  # no document twice
    expected = {
        doc_id
        for doc_id, doc in simulation.documents()
        if pd.Timestamp(doc["timestamp"]) > since and pd.Timestamp(doc["ingested_at"]) <= cuts[-1]
    }
    assert set(ids) == expected
    # The catch-up round holds the two hours before the start; each later one, about 5 minutes of 3 names.
    assert len(rounds[0]) > 60 and all(0 < len(written) <= 12 for written in rounds[1:])
    # The same day, the same documents (a restart writes the same ids).
    again = live_simulation(names=3, seed=1, started=STARTED + pd.Timedelta(hours=5), history_days=1, days_ahead=1)
    assert [doc_id for doc_id, _ in again.documents()] == [doc_id for doc_id, _ in simulation.documents()]


def test_simulate_live_writes_current_data(es_url: str) -> None:
    prefix = f"test-live-{uuid.uuid4().hex[:8]}"
    env = {"TAUXCHARGE_ES_URL": es_url, "TAUXCHARGE_INDEX_PREFIX": prefix}
    es = ElasticsearchResource(url=es_url, index_prefix=prefix)
    try:
        first = run_cli(
            "simulate", "--live", "--names", "3", "--days", "1", "--interval-s", "1", "--rounds", "2", env=env
        )
        assert first.returncode == 0, first.stderr
        assert "2 rounds" in first.stdout
        client = es.get_client()
        client.indices.refresh(index=es.indices.metrics)
        documents = [hit["_source"] for hit in scan_pit(client, es.indices.metrics, {"match_all": {}})]
        now = pd.Timestamp.now(tz="UTC")
        newest = max(pd.Timestamp(d["timestamp"]) for d in documents)
        assert now - pd.Timedelta(minutes=10) < newest <= now  # current data, nothing from the future
        assert max(pd.Timestamp(d["ingested_at"]) for d in documents) <= now
        # A second start continues after the newest document: what it adds arrived since, none twice.
        second = run_cli("simulate", "--live", "--names", "3", "--days", "1", "--rounds", "1", env=env)
        assert second.returncode == 0, second.stderr
        client.indices.refresh(index=es.indices.metrics)
        after = [hit["_source"] for hit in scan_pit(client, es.indices.metrics, {"match_all": {}})]
        added = [d for d in after if pd.Timestamp(d["timestamp"]) > newest]
        assert len(after) == len(documents) + len(added) and len(added) <= 12
    finally:
        es.get_client().indices.delete(index=f"{prefix}-*", allow_no_indices=True)
