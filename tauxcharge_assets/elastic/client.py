"""The connection to Elasticsearch: one client whose server answered, retried with backoff, then a clear error."""

from __future__ import annotations

import time

from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch.serializer import OrjsonSerializer


class ElasticsearchUnavailableError(RuntimeError):
    """Raised when the server cannot be reached after retries; the message names its address."""



def connect(
    url: str,
    api_key: str | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
    request_timeout_s: float = 60.0,
) -> Elasticsearch:
    """A client whose server answered ``_cluster/health``; retried with backoff, then a clear error.

    ``ping()``/``info()`` cannot be used: the integ-test build answers ``GET /`` with 405.
    """
    client = Elasticsearch(
        url,
        api_key=api_key or None,
        serializer=OrjsonSerializer(),  # orjson decodes search pages several times faster than json
        request_timeout=request_timeout_s,
        max_retries=3,
        retry_on_timeout=True,
    )
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            client.cluster.health(wait_for_status="yellow", timeout="30s")
            return client
        except (TransportError, ApiError) as error:
            last_error = error
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    raise ElasticsearchUnavailableError(
        f"Elasticsearch at {url} did not answer _cluster/health after {attempts} attempt{'s' if attempts != 1 else ''} "
        f"({type(last_error).__name__}: {last_error}). Start the local server with "
        "`python -m tauxcharge_assets es start`, or set TAUXCHARGE_ES_URL (and TAUXCHARGE_ES_API_KEY) "
        "to a reachable server."
    )


