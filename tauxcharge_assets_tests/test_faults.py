"""Faults are ridden out (issue 12): a server that goes away and comes back within the retry deadline
costs a tick time, not a failure, and nothing is read or written twice; one that stays down fails
after a bounded time with one message naming the address.

These tests stop and start their own server (port 9262, never the suite's 9250 or anyone else's):
each takes a restart, ~15-30 s.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from dagster import FilesystemIOManager, materialize
from elasticsearch import ConnectionError as EsConnectionError
from elasticsearch import Elasticsearch

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic import bulk
from tauxcharge_assets.elastic import server as es_server
from tauxcharge_assets.elastic.bulk import bulk_write, deterministic_id, scan_pages
from tauxcharge_assets.elastic.client import ElasticsearchUnavailableError, connect, retrying, set_retry_deadline
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets.model.forecast_documents import written_forecasts
from tauxcharge_assets.model.registry import promote
from tauxcharge_assets_tests.test_pipeline import TRAINING

pytestmark = pytest.mark.integration

FAULT_PORT = 9262


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


DOWN_PORT = _free_port()  # nothing listens there: a server that stays down


def _fake_connection_error() -> EsConnectionError:
    return EsConnectionError("Connection refused")


def test_retrying_rides_out_transient_errors() -> None:
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _fake_connection_error()
        return "answered"

    assert retrying(flaky, what="a test call", deadline_s=10) == "answered"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.25 and calls[2] - calls[1] >= 0.5  # 0.5 s, then 1 s, each jittered down to half


def _always_down() -> None:
    raise _fake_connection_error()


def test_retrying_gives_up_after_the_deadline_with_one_clear_message() -> None:
    client = Elasticsearch(f"http://127.0.0.1:{DOWN_PORT}")
    started = time.monotonic()
    with pytest.raises(ElasticsearchUnavailableError) as raised:
        retrying(_always_down, what="a search of x", client=client, deadline_s=2)
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 6
    message = str(raised.value)
    assert f"127.0.0.1:{DOWN_PORT}" in message and "a search of x" in message and "es status" in message
    assert "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained traceback


def test_retrying_does_not_retry_other_errors() -> None:
    calls = []

    def wrong() -> None:
        calls.append(1)
        raise ValueError("a bug, not a fault")

    with pytest.raises(ValueError):
        retrying(wrong, what="a test call", deadline_s=10)
    assert calls == [1]


def test_a_scan_and_a_write_to_a_server_that_stays_down_fail_in_bounded_time() -> None:
    client = set_retry_deadline(Elasticsearch(f"http://127.0.0.1:{DOWN_PORT}"), 3.0)
    for attempt in (
        lambda: list(scan_pages(client, "nothing", {"match_all": {}})),
        lambda: bulk_write(client, "nothing", _documents(10)),
    ):
        started = time.monotonic()
        with pytest.raises(ElasticsearchUnavailableError, match=f"127.0.0.1:{DOWN_PORT}"):
            attempt()
        assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def fault_server() -> Iterator[es_server.LocalServer]:
    """Our own server on 9262, which the tests stop and start again."""
    local = es_server.LocalServer(port=FAULT_PORT)
    already_running = es_server.cluster_health(local.url) is not None
    es_server.start(local)
    yield local
    if not already_running:
        es_server.stop(local)


_restarts: list[threading.Thread] = []


@pytest.fixture
def fault_client(fault_server: es_server.LocalServer) -> Iterator[Elasticsearch]:
    if es_server.cluster_health(fault_server.url) is None:
        es_server.start(fault_server)
    client = connect(fault_server.url, retry_deadline_s=120)
    yield client
    while _restarts:  # never two starts at once, even when a test failed before its restart finished
        _restarts.pop().join(timeout=180)
    if es_server.cluster_health(fault_server.url) is None:
        es_server.start(fault_server)
    client.indices.delete(index="faults-*", allow_no_indices=True)


def _restart_later(server: es_server.LocalServer) -> threading.Thread:
    """Stop the server now (blocking) and start it again in the background: down for ~15 s."""
    assert es_server.stop(server), "the fault server should have been running"
    thread = threading.Thread(target=es_server.start, args=(server,), daemon=True)
    thread.start()
    _restarts.append(thread)
    return thread


def _documents(count: int) -> list[tuple[str, dict]]:
    return [(deterministic_id("fault", i), {"name": f"n{i % 50}", "value": float(i), "seq": i}) for i in range(count)]


def test_a_scan_survives_a_server_restart(
    fault_client: Elasticsearch, fault_server: es_server.LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    open_pit = bulk._open_pit

    def counted(*args: object) -> str:
        opened.append(open_pit(*args))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(bulk, "_open_pit", counted)
    index = f"faults-scan-{uuid.uuid4().hex[:8]}"
    total = 3_000
    bulk_write(fault_client, index, _documents(total))
    fault_client.indices.flush(index=index)
    seen: list[int] = []
    restarter = None
    pages = 0
    for page in scan_pages(fault_client, index, {"match_all": {}}, source=["seq"], page_size=250):
        pages += 1
        seen.extend(hit["_source"]["seq"] for hit in page)
        if restarter is None:
            restarter = _restart_later(fault_server)  # the point in time dies with the server
    assert restarter is not None
    restarter.join(timeout=180)
    assert pages >= total // 250
    assert len(opened) == 2  # the first point in time was lost with the server and reopened once
    assert len(seen) == total and sorted(seen) == list(range(total))  # every document exactly once


def test_a_bulk_write_survives_a_server_restart(
    fault_client: Elasticsearch, fault_server: es_server.LocalServer
) -> None:
    index = f"faults-bulk-{uuid.uuid4().hex[:8]}"
    fault_client.indices.create(index=index)
    total = 6_000
    restarter: list[threading.Thread] = []

    def documents() -> Iterator[tuple[str, dict]]:
        for i, pair in enumerate(_documents(total)):
            if i == 1_500 and not restarter:  # a chunk or two sent, more to come
                restarter.append(_restart_later(fault_server))
            yield pair

    written = bulk_write(fault_client, index, documents(), chunk_size=500)
    restarter[0].join(timeout=180)
    assert written == total
    assert count_documents(fault_client, index) == total  # exactly once: ids are deterministic


def test_a_tick_rides_out_restarts_during_its_read_and_its_bulk_write(
    fault_server: es_server.LocalServer,
    mlflow_resource: MlflowResource,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole scheduled tick (trained champion, all six assets) while the server restarts twice: once
    as the tick reads the metrics, once as it writes its forecasts. No operator, nothing twice."""
    if es_server.cluster_health(fault_server.url) is None:
        es_server.start(fault_server)
    es = ElasticsearchResource(
        url=fault_server.url, index_prefix=f"faults-tick-{uuid.uuid4().hex[:8]}", retry_deadline_s=120
    )
    client = es.get_client()
    resources = {
        "elasticsearch": es,
        "mlflow": mlflow_resource,
        "alerts": AlertWebhookResource(),  # off
        "io_manager": FilesystemIOManager(base_dir=str(tmp_path_factory.mktemp("fault-storage"))),
    }
    end = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
    sim = simulate(SimulationSpec(n_names=4, days=3, end=end, seed=5))
    documents = list(sim.documents())
    spike_name, spike_at = sim.values.columns[1], end - pd.Timedelta(minutes=5)
    for _doc_id, document in documents:  # a spike in the slot the tick scores: one anomaly to write
        if document["name"] == spike_name and document["timestamp"] == spike_at.isoformat().replace("+00:00", "Z"):
            document["value"] = 100.0 if sim.values.loc[spike_at, spike_name] < 55 else 0.0
    bulk_write(client, es.indices.metrics, documents)
    client.indices.flush(index=es.indices.metrics)
    trained = materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        raise_on_error=False,
        selection=MODEL_ASSETS,
        resources=resources,
        run_config={**QUIET, "ops": {"trained_model": {"config": {**TRAINING, "train_until": end.isoformat()}}}},
    )
    promote(
        mlflow_resource.tracking_uri,
        mlflow_resource.registered_model_name,
        trained.output_for_node("trained_model").version,
    )

    faults: list[str] = []
    search_page, send_chunk = bulk._search_page, bulk._send_chunk

    def read_during_restart(client_: Elasticsearch, body: dict, pit: object) -> dict:
        if not faults and pit.index == es.indices.metrics:  # type: ignore[attr-defined]
            faults.append("read")
            _restart_later(fault_server)
        return search_page(client_, body, pit)  # type: ignore[arg-type]

    def write_during_restart(client_: Elasticsearch, index: str, chunk: list, *rest: object) -> tuple:
        if faults == ["read"] and index == es.indices.forecasts:
            faults.append("write")
            while _restarts:
                _restarts.pop().join(timeout=180)
            _restart_later(fault_server)
        return send_chunk(client_, index, chunk, *rest)

    monkeypatch.setattr(bulk, "_search_page", read_during_restart)
    monkeypatch.setattr(bulk, "_send_chunk", write_during_restart)
    key = partition_key_ending_at(end)
    result = materialize(
        [*ALL_ASSETS, *ALL_CHECKS], selection=TICK_ASSETS, partition_key=key, resources=resources, run_config=QUIET
    )
    assert result.success and faults == ["read", "write"]
    # ridden out inside the steps (elastic.client.retrying): no step needed its RetryPolicy, the
    # second line of defence (it alone would also bring this run through: tested by removing the helper)
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    forecasts = result.output_for_node("forecasts")
    written = written_forecasts(forecasts)
    assert count_documents(client, es.indices.forecasts) == len(written) > 0  # each forecast exactly once
    assert len(written.drop_duplicates(["name", "horizon_steps"])) == len(written)
    metadata = result.asset_materializations_for_node("anomaly_report")[0].metadata
    anomalies = count_documents(client, es.indices.anomalies, {"term": {"partition_key": key}})
    assert anomalies == metadata["anomalies"].value == metadata["documents_written"].value >= 1  # each once
    client.indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


def test_a_tick_against_a_server_that_stays_down_fails_in_bounded_time_with_one_message() -> None:
    """Each step retries (RetryPolicy) and then fails as a ``Failure`` naming the address, in bounded time."""
    down = ElasticsearchResource(url=f"http://127.0.0.1:{DOWN_PORT}", connect_attempts=1, retry_deadline_s=2)
    started = time.monotonic()
    result = materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=["raw_es_extract"],
        partition_key=partition_key_ending_at(pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)),
        resources={
            "elasticsearch": down,
            "mlflow": MlflowResource(tracking_uri="sqlite:///unused.db"),
            "alerts": AlertWebhookResource(),
        },
        run_config=QUIET,
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3  # TICK_RETRY_POLICY: 3 retries, 5 s, 10 s, 20 s (+/- jitter) apart
    assert elapsed < 90
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and "Exceeded max_retries of 3" in error.message  # Dagster's wrapper, then ours:
    ours = error.cause
    assert ours is not None and ours.cls_name == "Failure"
    assert f"127.0.0.1:{DOWN_PORT}" in ours.message and "TAUXCHARGE_ES_URL" in ours.message
    assert ours.cause is None and ours.context is None  # no chained traceback of the expected failure
