"""Against the real Elasticsearch: reads as of a time, bad documents, idempotent writes, name ids."""

import threading

import pandas as pd
import pytest

from tauxcharge_assets.data.name_ids import UNKNOWN_NAME_ID, assign_name_ids, load_name_ids
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


def test_concurrent_writers_never_share_an_id(es_resource: ElasticsearchResource) -> None:
    client = es_resource.get_client()
    index = es_resource.indices.names
    batches = [[f"n{i}-{j}" for j in range(5)] + ["shared"] for i in range(4)]
    threads = [threading.Thread(target=assign_name_ids, args=(client, index, names)) for names in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = load_name_ids(client, index)
    assert len(ids) == 21
    assert len(set(ids.values())) == 21


def test_local_server_status_is_reported(es_url: str) -> None:
    port = int(es_url.rsplit(":", 1)[1])
    status = es_server.status(es_server.LocalServer(port=port))
    assert status["status"] in ("green", "yellow")
    assert status["url"] == es_url
