"""``ingest csv`` and ``ingest http`` as a user runs them, against the real server: dimensions kept, bad rows
counted with their line numbers, reruns writing nothing and keeping each document's arrival time, a
corrected value arriving as a new document the as-of reads see only from its arrival, a local HTTP
endpoint pulled on demand and on a schedule, its failures in one line."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tauxcharge_assets.data.cleaning import clean_series
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import refresh_index, scan_pit
from tauxcharge_assets.elastic.queries import count_documents, fetch_raw_metrics
from tauxcharge_assets.ingestion.http_pull import EndpointUnavailableError, repeat, shown_url
from tauxcharge_assets.ingestion.records import FieldMapping, IngestInputError, IngestResult, to_documents
from tauxcharge_assets_tests.test_cli import assert_one_line_failure, run_cli

SECRET = "Bearer s3cret-token-7f3a"  # what the endpoint expects in Authorization; must never be printed

# --- pure ------------------------------------------------------------------------------------------


def test_one_instant_and_one_number_make_one_id_whatever_their_spelling() -> None:
    """The id is built from the parsed timestamp and value: a file in another spelling re-ingests nothing."""
    rows = pd.DataFrame(
        {
            "timestamp": ["2026-01-05 00:00", "2026-01-05T00:00:00Z", "2026-01-05T01:00:00+01:00", "2026-01-05"],
            "name": ["a", " a ", "a", "a"],
            "value": ["50", "50.0", "5e1", "50.00"],
        }
    )
    converted = to_documents(rows, FieldMapping(), [], pd.Timestamp("2026-02-01", tz="UTC"), range(2, 6))
    assert len({doc_id for doc_id, _ in converted.documents}) == 1
    assert converted.documents[0][1] == {
        "timestamp": "2026-01-05T00:00:00Z",
        "name": "a",
        "value": 50.0,
        "ingested_at": "2026-02-01T00:00:00.000Z",
    }
    corrected = to_documents(rows.head(1).assign(value="51"), FieldMapping(), [], pd.Timestamp.now(tz="UTC"), [2])
    assert corrected.documents[0][0] != converted.documents[0][0]  # a corrected value is another document


def test_bad_rows_are_counted_by_reason_with_their_line_numbers() -> None:
    rows = pd.DataFrame(
        {
            "ts": ["2026-01-05 00:00", "yesterday", "", "2026-01-05 00:05", "2026-01-05 00:10", "2026-01-05 00:15"],
            "host": ["a", "a", "a", "", "b", "b"],
            "load": ["1", "2", "3", "4", "", "n/a"],
        }
    )
    mapping = FieldMapping(timestamp="ts", name="host", value="load")
    converted = to_documents(rows, mapping, [], pd.Timestamp.now(tz="UTC"), range(2, 8))
    assert converted.bad.counts == {
        "missing timestamp": 1,
        "unparseable timestamp": 1,
        "missing name": 1,
        "missing value": 1,
    }
    assert converted.bad.summary() == (
        "missing timestamp: 1 (line 4); unparseable timestamp: 1 (line 3); missing name: 1 (line 5); "
        "missing value: 1 (line 6)"
    )
    assert [doc["value"] for _, doc in converted.documents] == [1.0, "n/a"]  # n/a: written, counted by the cleaning
    assert converted.non_numeric == 1


def test_a_dimension_named_like_a_metric_field_is_refused() -> None:
    """A column ``ingested_at`` or ``value`` left as a dimension would overwrite the document's own field."""
    mapping = FieldMapping(timestamp="ts", name="host", value="load")
    with pytest.raises(IngestInputError, match="'ingested_at' would overwrite the metric field"):
        mapping.dimension_columns(["ts", "host", "load", "site", "ingested_at"], "f.csv")
    assert mapping.dimension_columns(["ts", "host", "load", "site"], "f.csv") == ["site"]


def test_a_scheduled_pull_survives_a_failed_pull_and_stops_after_its_iterations() -> None:
    answers: list[Exception | None] = [None, EndpointUnavailableError("down"), None]
    reported: list[str] = []
    failed: list[str] = []
    pauses: list[float] = []

    def pull() -> IngestResult:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return IngestResult(source="u")

    pulls, failures = repeat(
        pull, 5.0, 3, lambda r: reported.append(r.source), lambda e: failed.append(str(e)), pauses.append
    )
    assert (pulls, [str(f) for f in failures], reported, failed) == (3, ["down"], ["u", "u"], ["down"])
    assert len(pauses) == 2 and all(4.0 < pause <= 5.0 for pause in pauses)
    with pytest.raises(EndpointUnavailableError):  # on demand, the failure is the command's
        repeat(lambda: (_ for _ in ()).throw(EndpointUnavailableError("down")), None, None, print, print)


def test_ingest_connects_where_the_resource_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ingest`` skips Dagster's resource (seconds of imports) but must read the same settings."""
    from tauxcharge_assets.cli import main as cli
    from tauxcharge_assets.defs.resources import elasticsearch_from_env
    from tauxcharge_assets.elastic.server import LocalServer

    monkeypatch.setenv("TAUXCHARGE_ES_URL", "https://es.example:9243")
    monkeypatch.setenv("TAUXCHARGE_ES_API_KEY", "a-key")
    monkeypatch.setenv("TAUXCHARGE_INDEX_PREFIX", "prod")
    resource = elasticsearch_from_env().process_config_and_initialize()
    assert cli.metrics_settings() == (resource.url, resource.api_key, resource.index_prefix)
    for variable in ("TAUXCHARGE_ES_URL", "TAUXCHARGE_ES_API_KEY", "TAUXCHARGE_INDEX_PREFIX"):
        monkeypatch.delenv(variable)
    resource = elasticsearch_from_env().process_config_and_initialize()
    assert cli.metrics_settings() == (None, resource.api_key, resource.index_prefix)  # None: the local server
    assert resource.url == LocalServer().url


def test_urls_are_shown_without_credentials_or_query() -> None:
    assert shown_url("https://user:pw@example.com:8443/m?token=abc") == "https://example.com:8443/m?..."


# --- csv, with the real server ---------------------------------------------------------------------

CSV = """ts,host,load,site,rack
2026-01-05 00:00,web-1,50,eu,007
2026-01-05 00:05,web-1,51.5,eu,007
2026-01-05 00:10,web-1,52,eu,007
2026-01-05 00:10,web-1,52,eu,007
2026-01-05 00:00,db-1,20,us,
not a time,db-1,21,us,
2026-01-05 00:05,,22,us,
2026-01-05 00:05,db-1,22.5,us,
2026-01-05 00:10,db-1,23,us,
"""


def env_for(es: ElasticsearchResource) -> dict[str, str]:
    return {"TAUXCHARGE_ES_URL": es.url, "TAUXCHARGE_INDEX_PREFIX": es.index_prefix}


def arrivals(es: ElasticsearchResource) -> dict[str, tuple[Any, str]]:
    client = es.get_client()
    refresh_index(client, es.indices.metrics)
    hits = scan_pit(client, es.indices.metrics, {"match_all": {}})
    return {hit["_id"]: (hit["_source"]["value"], hit["_source"]["ingested_at"]) for hit in hits}


def test_ingest_csv_keeps_dimensions_counts_bad_rows_and_reruns_write_nothing(
    es_resource: ElasticsearchResource, tmp_path: Path
) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    args = ("ingest", "csv", str(path), "--timestamp-column", "ts", "--name-column", "host", "--value-column", "load")
    first = run_cli(*args, "--chunk-size", "3", env=env_for(es_resource))  # line numbers across chunks
    assert first.returncode == 0, first.stderr
    # 9 rows: 6 unique (name, timestamp), 1 repeated row, 2 unusable rows
    assert first.stdout.strip() == (
        f"{path}: 9 rows, 6 new documents, 1 already present; 2 rows not written: "
        "unparseable timestamp: 1 (line 7); missing name: 1 (line 8)"
    )
    assert first.stderr.startswith("Ingesting metrics.csv: 9 rows in ")
    client = es_resource.get_client()
    before = arrivals(es_resource)
    assert len(before) == 6
    document = next(
        hit["_source"] for hit in scan_pit(client, es_resource.indices.metrics, {"term": {"name": "web-1"}})
    )
    assert document["site"] == "eu" and document["rack"] == "007"  # as written, not the number 7
    mapping = client.indices.get_mapping(index=es_resource.indices.metrics)
    properties = next(iter(mapping.body.values()))["mappings"]["properties"]
    assert properties["site"]["type"] == properties["rack"]["type"] == "keyword"

    again = run_cli(*args, env=env_for(es_resource))
    assert again.returncode == 0, again.stderr
    assert ", 0 new documents, 7 already present;" in again.stdout
    assert arrivals(es_resource) == before  # nothing rewritten: the as-of reads of the past do not move

    # A corrected value arrives as a new document: the cleaning prefers it from its arrival on, and
    # the reads as of before it still see the first value.
    path.write_text(CSV.replace("00:10,db-1,23", "00:10,db-1,24"))
    corrected = run_cli(*args, env=env_for(es_resource))
    assert ", 1 new documents, 6 already present;" in corrected.stdout, corrected.stderr
    after = arrivals(es_resource)
    assert len(after) == 7 and {k: v for k, v in after.items() if k in before} == before
    (arrived,) = [pd.Timestamp(stamp) for key, (_, stamp) in after.items() if key not in before]
    start, end = pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-05 00:15", tz="UTC")

    def db_value_as_of(as_of: pd.Timestamp) -> float:
        raw = fetch_raw_metrics(client, es_resource.indices.metrics, start, end, as_of)
        return float(clean_series(raw, start, end).values.loc[pd.Timestamp("2026-01-05 00:10", tz="UTC"), "db-1"])

    assert db_value_as_of(arrived) == 24.0
    assert db_value_as_of(arrived - pd.Timedelta("1ms")) == 23.0


def test_ingest_csv_one_series_per_file_named_after_it(es_resource: ElasticsearchResource, tmp_path: Path) -> None:
    """A NAB-style file (``timestamp,value``): the name comes from the file name."""
    path = tmp_path / "ec2_cpu_utilization_test.csv"
    stamps = pd.date_range("2014-02-14 14:30", periods=12, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": range(12)}).to_csv(path, index=False)
    result = run_cli("ingest", "csv", str(path), "--name-from-file", env=env_for(es_resource))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: 12 rows, 12 new documents, 0 already present"
    client = es_resource.get_client()
    assert count_documents(client, es_resource.indices.metrics, {"term": {"name": path.stem}}) == 12


def test_ingest_csv_wrong_mapping_names_the_columns_found(tmp_path: Path) -> None:
    """Checked before connecting (the server in ``run_cli`` is unreachable): nothing is written."""
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    result = run_cli("ingest", "csv", str(path), "--timestamp-column", "ts", "--value-column", "load")
    assert_one_line_failure(
        result, 2, str(path), "no column 'name'", "its columns are: ts, host, load, site, rack", "--name-column"
    )


# --- http, with the real server and a local endpoint ------------------------------------------------


@dataclass
class Endpoint:
    """A local JSON endpoint: ``answer(n)`` gives the n-th GET's (status, body); requests are recorded."""

    url: str
    answer: Callable[[int], tuple[int, Any]] = lambda n: (200, [])
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(dict(self.headers))
            if self.headers.get("Authorization") != SECRET:
                status, body = 401, {"error": "unauthorized"}
            else:
                status, body = served.answer(len(served.requests))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/metrics?since=0"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def items(count: int) -> list[dict[str, Any]]:
    return [
        {"at": f"2026-01-05T00:{5 * i:02d}:00Z", "host": f"web-{i % 2}", "load": 40 + i, "zone": i % 3}
        for i in range(count)
    ]


HTTP_ARGS = ("--json-path", "data.metrics", "--timestamp-field", "at", "--name-field", "host", "--value-field", "load")


def http_env(es: ElasticsearchResource, secret: str = SECRET) -> dict[str, str]:
    return {**env_for(es), "METRICS_AUTH": secret}


def test_ingest_http_twice_writes_once(es_resource: ElasticsearchResource, endpoint: Endpoint) -> None:
    endpoint.answer = lambda n: (200, {"data": {"metrics": [*items(5), {"at": "2026-01-05T01:00:00Z", "load": 1}]}})
    args = ("ingest", "http", endpoint.url, *HTTP_ARGS, "--header-from-env", "Authorization=METRICS_AUTH")
    first = run_cli(*args, env=http_env(es_resource))
    assert first.returncode == 0, first.stderr
    shown = endpoint.url.split("?")[0] + "?..."
    assert first.stdout.strip() == (
        f"{shown}: 6 rows, 5 new documents, 0 already present; 1 rows not written: missing name: 1 (item 6)"
    )
    second = run_cli(*args, env=http_env(es_resource))
    assert second.stdout.strip().startswith(f"{shown}: 6 rows, 0 new documents, 5 already present")
    assert len(endpoint.requests) == 2 and endpoint.requests[0]["Authorization"] == SECRET
    client = es_resource.get_client()
    assert count_documents(client, es_resource.indices.metrics) == 5
    zones = {hit["_source"]["zone"] for hit in scan_pit(client, es_resource.indices.metrics, {"match_all": {}})}
    assert zones == {"0", "1", "2"}  # numbers in the payload, keywords in the index
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert "s3cret" not in output


def test_ingest_http_failures_are_one_line_without_the_secret(
    es_resource: ElasticsearchResource, endpoint: Endpoint
) -> None:
    args = ("ingest", "http", endpoint.url, *HTTP_ARGS, "--header-from-env", "Authorization=METRICS_AUTH")
    endpoint.answer = lambda n: (500, {"error": "boom"})
    failed = run_cli(*args, env=http_env(es_resource))
    assert_one_line_failure(failed, 1, "answered 500 Internal Server Error", "try again later")
    refused = run_cli(*args, env=http_env(es_resource, secret=SECRET + "-wrong"))
    assert_one_line_failure(refused, 2, "answered 401 Unauthorized", "--header-from-env")
    unset = run_cli(*args, env={**env_for(es_resource), "METRICS_AUTH": ""})
    assert_one_line_failure(unset, 2, "environment variable METRICS_AUTH is not set")
    endpoint.answer = lambda n: (200, {"data": {"items": []}})
    wrong_path = run_cli(*args, env=http_env(es_resource))
    assert_one_line_failure(wrong_path, 2, "no key 'metrics' at data of the payload (found: items)")
    for result in (failed, refused, unset, wrong_path):
        assert "s3cret" not in result.stdout + result.stderr
    assert count_documents(es_resource.get_client(), es_resource.indices.metrics) == 0


def test_ingest_http_every_pulls_on_schedule_through_a_failed_pull(
    es_resource: ElasticsearchResource, endpoint: Endpoint
) -> None:
    """Three pulls 0.2 s apart; the second fails (503) and the third still runs; the payload grows."""
    endpoint.answer = lambda n: (503, {}) if n == 2 else (200, {"data": {"metrics": items(2 * n)}})
    result = run_cli(
        "ingest",
        "http",
        endpoint.url,
        *HTTP_ARGS,
        "--header-from-env",
        "Authorization=METRICS_AUTH",
        "--every",
        "0.2",
        "--iterations",
        "3",
        env=http_env(es_resource),
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "2 rows, 2 new documents, 0 already present" in lines[0]
    assert "6 rows, 4 new documents, 2 already present" in lines[1]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "pull failed:" in errors[0] and "answered 503" in errors[0]
    assert errors[1].startswith("error: 1 of 3 pulls failed; the last: ") and "answered 503" in errors[1]
    assert len(endpoint.requests) == 3
    assert count_documents(es_resource.get_client(), es_resource.indices.metrics) == 6
