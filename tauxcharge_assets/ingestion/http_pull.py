"""``ingest http``: pull JSON metrics from an HTTP endpoint, once (on demand) or every N seconds.

The payload is a list of objects, or holds one under ``json_path`` (dotted keys, ``data.metrics``);
each object is a row mapped like a CSV row (``ingestion/records.py``), so the same idempotence rule
holds: pulling the same payload twice writes nothing the second time.

Headers that carry secrets (``Authorization``) are read from environment variables named on the
command line, never given as values: they appear in no message, and the URL is shown without its
user information or query string, where tokens also hide.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.bulk import bulk_create
from tauxcharge_assets.ingestion.records import FieldMapping, IngestInputError, IngestResult, now_utc, to_documents


class EndpointUnavailableError(RuntimeError):
    """The endpoint did not answer, timed out or failed (5xx): the command line exits 1, as for a server."""


def shown_url(url: str) -> str:
    """The URL as messages show it: without ``user:password@`` and without the query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "..." if parts.query else "", ""))


def headers_from_env(names_to_variables: Mapping[str, str]) -> dict[str, str]:
    """``{"Authorization": "METRICS_TOKEN"}`` -> the header with that variable's value; a variable not set
    raises ``IngestInputError`` naming it (never a value)."""
    headers = {}
    for header, variable in names_to_variables.items():
        value = os.environ.get(variable)
        if not value:
            raise IngestInputError(
                f"--header-from-env {header}={variable}: the environment variable {variable} is not set; export it."
            )
        headers[header] = value
    return headers


def fetch_json(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """The decoded JSON body of a GET; failures say what to do, in one line, with no header value."""
    shown = shown_url(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers}, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        status = f"{shown} answered {error.code} {error.reason}"
        if 400 <= error.code < 500:
            advice = (
                "check the credentials given with --header-from-env"
                if error.code in (401, 403)
                else "check the URL"
            )
            raise IngestInputError(f"{status}: {advice}.") from None
        raise EndpointUnavailableError(f"{status}: the endpoint failed; try again later.") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise EndpointUnavailableError(
            f"{shown} did not answer ({reason}): check that the endpoint is up and reachable."
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise IngestInputError(f"{shown} did not answer JSON ({len(body):,} bytes): check the URL.") from None


def records_at(payload: Any, json_path: str | None, source: str) -> list[Any]:
    """The list of rows in ``payload``, under ``json_path`` (dotted keys) when given."""
    found = payload
    walked = []
    for key in (json_path or "").split(".") if json_path else []:
        if not isinstance(found, dict) or key not in found:
            keys = ", ".join(map(str, found)) if isinstance(found, dict) else type(found).__name__
            where = ".".join(walked) or "the top level"
            raise IngestInputError(f"{source}: no key {key!r} at {where} of the payload (found: {keys}).")
        found = found[key]
        walked.append(key)
    if not isinstance(found, list):
        keys = f" with keys {', '.join(map(str, found))}" if isinstance(found, dict) else ""
        where = f"at {json_path}" if json_path else "at the top level"
        raise IngestInputError(
            f"{source}: expected a list of objects {where}, found a {type(found).__name__}{keys}; "
            "pass --json-path to the list."
        )
    return found


def pull_once(
    client: Elasticsearch,
    index: str,
    url: str,
    mapping: FieldMapping,
    json_path: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> IngestResult:
    """One GET, its rows created in ``index`` (already present ones are kept as they are)."""
    source = shown_url(url)
    items = records_at(fetch_json(url, headers or {}, timeout), json_path, source)
    result = IngestResult(source=source, unit="item")
    numbers = [i + 1 for i, item in enumerate(items) if isinstance(item, dict)]
    result.bad.add("not an object", [i + 1 for i, item in enumerate(items) if not isinstance(item, dict)])
    # object dtype: a number stays as sent (an int column with one missing key would become floats)
    rows = pd.DataFrame([item for item in items if isinstance(item, dict)], dtype=object)
    if not len(rows):
        result.rows = len(items)
        return result
    dimensions = mapping.dimension_columns([str(column) for column in rows.columns], source, noun="field")
    converted = to_documents(rows, mapping, dimensions, now_utc(), numbers)
    created, present = bulk_create(client, index, converted.documents)
    result.add(converted, created, present, len(items))
    return result


def repeat(
    pull: Callable[[], IngestResult],
    every: float | None,
    iterations: int | None,
    report: Callable[[IngestResult], None],
    failed: Callable[[Exception], None],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, list[Exception]]:
    """Pull once (``every`` None), or every ``every`` seconds, ``iterations`` times or until interrupted.

    On a schedule a failed pull (the endpoint down, a bad payload) is reported and the next one is
    tried at its time: a puller that stops at the first hiccup misses everything after it. Failures
    of Elasticsearch still stop it (they are retried inside each write already). Returns the number of
    pulls and the failures.
    """
    pulls, failures = 0, []
    while True:
        started = time.monotonic()
        pulls += 1
        try:
            report(pull())
        except (IngestInputError, EndpointUnavailableError) as error:
            if every is None:
                raise
            failures.append(error)
            failed(error)
        if every is None or (iterations is not None and pulls >= iterations):
            return pulls, failures
        sleep(max(0.0, every - (time.monotonic() - started)))
