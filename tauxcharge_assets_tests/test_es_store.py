"""Against the real Elasticsearch: reads as of a time, bad documents, idempotent writes, name ids."""

import threading
from typing import Any

import pandas as pd
import pytest
from elasticsearch import ConflictError, Elasticsearch

from tauxcharge_assets.data.name_ids import COUNTER_ID, UNKNOWN_NAME_ID, assign_name_ids, load_name_ids
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic import server as es_server
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.elastic.client import ElasticsearchUnavailableError, connect
from tauxcharge_assets.elastic.queries import count_documents, count_malformed_timestamps, fetch_raw_metrics

T0 = pd.Timestamp("2026-02-01 00:00", tz="UTC")


def doc(name: str, minutes: int, value: object, arrived_after_s: int = 30) -> dict:
    stamp = T0 + pd.Timedelta(minutes=minutes)
    return {
        "timestamp": stamp.isoformat(),
        "name": name,
        "value": value,
        "ingested_at": (stamp + pd.Timedelta(seconds=arrived_after_s)).isoformat(),
        "site": "par",
    }


def test_fetch_is_as_of_and_keeps_bad_values(es_resource: ElasticsearchResource) -> None:
    client = es_resource.get_client()
    index = es_resource.indices.metrics
    documents = [
        ("1", doc("a", 0, 10.0)),
        ("2", doc("a", 5, "n/a")),  # kept in _source although the float field ignores it
        ("3", doc("b", 5, 20.0, arrived_after_s=3600)),  # arrives an hour late
        ("4", doc("b", 60, 30.0)),  # outside the window
        ("5", {"timestamp": "yesterday-ish", "name": "c", "value": 1.0}),  # malformed timestamp
        ("6", {"timestamp": (T0 + pd.Timedelta(minutes=10)).isoformat(), "name": "c", "value": 5.0}),
    ]
    assert bulk_write(client, index, documents) == 6
    end = T0 + pd.Timedelta(minutes=30)
    early = fetch_raw_metrics(client, index, T0, end, as_of=end)
    late = fetch_raw_metrics(client, index, T0, end, as_of=end + pd.Timedelta(hours=2))
    assert sorted(zip(early["name"], early["value"].astype(str), strict=False)) == [
        ("a", "10.0"),
        ("a", "n/a"),
        ("c", "5.0"),
    ]
    assert len(late) == 4 and "b" in set(late["name"])
    assert early["timestamp"].dt.tz is not None
    assert count_malformed_timestamps(client, index) == 1


def test_bulk_write_is_idempotent(es_resource: ElasticsearchResource) -> None:
    client = es_resource.get_client()
    index = es_resource.indices.metrics
    documents = [(f"id-{i}", doc("a", 5 * i, float(i))) for i in range(20)]
    bulk_write(client, index, documents)
    bulk_write(client, index, documents)
    assert count_documents(client, index) == 20


def test_unreachable_server_is_retried_then_named() -> None:
    with pytest.raises(ElasticsearchUnavailableError, match=r"http://127\.0\.0\.1:9.*after 2 attempts"):
        connect("http://127.0.0.1:9", attempts=2, backoff_s=0.01, request_timeout_s=1)


def test_names_keep_their_ids_and_new_names_get_new_ones(es_resource: ElasticsearchResource) -> None:
    client = es_resource.get_client()
    index = es_resource.indices.names
    first, new = assign_name_ids(client, index, ["b", "a"])
    assert sorted(new) == ["a", "b"] and UNKNOWN_NAME_ID not in first.values()
    second, new = assign_name_ids(client, index, ["c", "a", "b"])
    assert new == ["c"]
    assert second["a"] == first["a"] and second["b"] == first["b"]
    assert second["c"] not in (first["a"], first["b"])


class _RacingClient:
    """The real client, except that each writer's first read of the id counter waits for the other's:
    both hold the same counter (same ``_seq_no``) before either writes it, the race the compare-and-set
    must win. Conflicts on the counter are counted."""

    def __init__(self, client: Elasticsearch, barrier: threading.Barrier, conflicts: list[str]) -> None:
        self._client, self._barrier, self._conflicts = client, barrier, conflicts
        self._waited: set[int] = set()

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._client, attribute)

    def get(self, **kwargs: Any) -> Any:
        counter = self._client.get(**kwargs)
        if kwargs.get("id") == COUNTER_ID and threading.get_ident() not in self._waited:
            self._waited.add(threading.get_ident())
            self._barrier.wait(timeout=60)  # the other writer has read the same counter too
        return counter

    def index(self, **kwargs: Any) -> Any:
        try:
            return self._client.index(**kwargs)
        except ConflictError:
            if kwargs.get("id") == COUNTER_ID:
                self._conflicts.append(threading.current_thread().name)
            raise


def test_concurrent_writers_never_share_an_id(es_resource: ElasticsearchResource) -> None:
    """Two backfills reserve ids from the same counter state at once: the compare-and-set makes one of
    them retry, so no id is given twice (without it both would hand out the same block)."""
    client = es_resource.get_client()
    index = es_resource.indices.names
    assign_name_ids(client, index, ["first"])  # the counter exists: both writers will read it
    barrier, conflicts = threading.Barrier(2), []
    racing = _RacingClient(client, barrier, conflicts)
    batches = [[f"n{i}-{j}" for j in range(5)] + ["shared"] for i in range(2)]
    failures: list[BaseException] = []

    def writer(names: list[str]) -> None:
        try:
            assign_name_ids(racing, index, names)
        except BaseException as error:  # surfaced below, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(names,), name=f"writer-{i}") for i, names in enumerate(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    ids = load_name_ids(client, index)
    assert len(ids) == 1 + 2 * 5 + 1
    assert len(set(ids.values())) == len(ids), ids
    assert UNKNOWN_NAME_ID not in ids.values()
    assert len(conflicts) == 1  # the race did happen: exactly one writer lost the compare-and-set and retried


def test_local_server_status_is_reported(es_url: str) -> None:
    port = int(es_url.rsplit(":", 1)[1])
    status = es_server.status(es_server.LocalServer(port=port))
    assert status["status"] in ("green", "yellow")
    assert status["url"] == es_url
