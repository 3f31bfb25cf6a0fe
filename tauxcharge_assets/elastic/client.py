"""The connection to Elasticsearch: one client whose server answered, retried with backoff, then a clear error."""

from __future__ import annotations

import dataclasses
import os
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, Elasticsearch, SSLError, TransportError
from elasticsearch.serializer import OrjsonSerializer

T = TypeVar("T")

TRANSIENT_STATUSES = (429, 502, 503, 504)
# How long one call to Elasticsearch keeps retrying transient errors before the run fails. Read once,
# from TAUXCHARGE_ES_RETRY_DEADLINE_S; a client made by ``connect(..., retry_deadline_s=...)`` (the
# Dagster resource's ``retry_deadline_s``) carries its own.
DEFAULT_RETRY_DEADLINE_S = float(os.environ.get("TAUXCHARGE_ES_RETRY_DEADLINE_S", "60"))
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 8.0
_deadlines: weakref.WeakKeyDictionary[Elasticsearch, float] = weakref.WeakKeyDictionary()


ACCESS_STATUSES = (401, 403)


class ElasticsearchUnavailableError(RuntimeError):
    """Raised when the server cannot be reached after retries; the message names its address."""


class ElasticsearchAccessError(RuntimeError):
    """The server refused us (401, 403), its certificate is not trusted, or the credentials are set twice.

    Never retried: waiting does not fix a wrong password or a missing CA bundle. The message says
    what to check and never contains a secret.
    """


@dataclass(frozen=True)
class Security:
    """How the client proves who it is and checks the server: an API key or a user and password (one of
    the two), and the CA bundle, certificate check and pinned fingerprint for an https URL."""

    api_key: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    ssl_assert_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.api_key and (self.username or self.password):
            raise ElasticsearchAccessError(
                "Both an API key (TAUXCHARGE_ES_API_KEY) and a user/password (TAUXCHARGE_ES_USERNAME, "
                "TAUXCHARGE_ES_PASSWORD) are set: set only one of the two."
            )
        if bool(self.username) != bool(self.password):
            missing = "TAUXCHARGE_ES_PASSWORD" if self.username else "TAUXCHARGE_ES_USERNAME"
            raise ElasticsearchAccessError(
                f"A user/password needs both TAUXCHARGE_ES_USERNAME and TAUXCHARGE_ES_PASSWORD: set {missing}."
            )

    def client_options(self) -> dict[str, Any]:
        """The elasticsearch-py keyword arguments for these settings."""
        options: dict[str, Any] = {"verify_certs": self.verify_certs}
        if self.api_key:
            options["api_key"] = self.api_key
        if self.username and self.password:
            options["basic_auth"] = (self.username, self.password)
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        if self.ssl_assert_fingerprint:
            options["ssl_assert_fingerprint"] = self.ssl_assert_fingerprint
        return options


def is_access_denied(error: BaseException) -> bool:
    """401 (who are you?) or 403 (not allowed): a configuration problem, not a fault to wait out."""
    return isinstance(error, ApiError) and status_of(error) in ACCESS_STATUSES


def is_untrusted_certificate(error: BaseException) -> bool:
    """The TLS handshake failed on the certificate itself (unknown CA, wrong name, fingerprint mismatch)."""
    if not isinstance(error, SSLError):
        return False
    text = str(error).lower()
    return "certificate" in text or "fingerprint" in text or "hostname" in text


def access_error(address: str, what: str, error: BaseException) -> ElasticsearchAccessError:
    """One line saying what was refused and what to check (the server's reason names no secret)."""
    status = status_of(error)
    if status == 401:
        return ElasticsearchAccessError(
            f"Elasticsearch at {address} refused {what}: 401, the credentials were not accepted "
            f"({_reason(error)}). Check TAUXCHARGE_ES_API_KEY, or TAUXCHARGE_ES_USERNAME and "
            "TAUXCHARGE_ES_PASSWORD (not expired, not revoked, for this cluster)."
        )
    if status == 403:
        return ElasticsearchAccessError(
            f"Elasticsearch at {address} refused {what}: 403, the user may not do this ({_reason(error)}). "
            'Give its role the privileges listed in README.md, "Secured clusters".'
        )
    return ElasticsearchAccessError(
        f"Elasticsearch at {address}: its TLS certificate was not accepted during {what} ({error}). "
        "Set TAUXCHARGE_ES_CA_CERTS to the CA bundle that signed it (or TAUXCHARGE_ES_SSL_ASSERT_FINGERPRINT "
        "to its SHA-256 fingerprint); TAUXCHARGE_ES_VERIFY_CERTS=false turns the check off (insecure)."
    )


def _reason(error: BaseException) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        reason = (body.get("error") or {}).get("reason") if isinstance(body.get("error"), dict) else body.get("error")
        if reason:
            return " ".join(str(reason).split())[:300]
    return type(error).__name__


def address_of(client: Elasticsearch | None) -> str:
    """The base URL a client talks to (for messages), or "Elasticsearch" when it cannot be told."""
    try:
        return str(client.transport.node_pool.all()[0].base_url)  # type: ignore[union-attr]
    except Exception:  # a message must never fail for want of an address
        return "Elasticsearch"


def set_retry_deadline(client: Elasticsearch, deadline_s: float) -> Elasticsearch:
    """Give ``client`` its own retry deadline (``connect`` does, from the resource's ``retry_deadline_s``)."""
    _deadlines[client] = deadline_s
    return client


def retry_deadline(client: Elasticsearch | None) -> float:
    """The retry deadline of ``client`` (set by ``connect``), else the module default."""
    if client is None:
        return DEFAULT_RETRY_DEADLINE_S
    try:
        return _deadlines.get(client, DEFAULT_RETRY_DEADLINE_S)
    except TypeError:
        return DEFAULT_RETRY_DEADLINE_S


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an Elasticsearch error, when it has one."""
    if isinstance(error, ApiError):
        return getattr(error, "status_code", None) or getattr(getattr(error, "meta", None), "status", None)
    return None


def is_transient(error: BaseException) -> bool:
    """Connection refused/reset, timeouts, and the statuses a restarting or busy server answers."""
    if is_untrusted_certificate(error):
        return False
    if isinstance(error, (ConnectionError, ConnectionTimeout)):
        return True
    if isinstance(error, ApiError):
        status = status_of(error)
        if status in TRANSIENT_STATUSES:
            return True
        # a search answered while the shards are still recovering after a restart
        return "no_shard_available_action_exception" in str(error)
    return False


def is_lost_pit(error: BaseException) -> bool:
    """The point in time is gone (expired, or the server restarted): a scan must reopen it."""
    if not isinstance(error, ApiError):
        return False
    text = str(error)
    return (
        "search_context_missing_exception" in text
        or "No search context found" in text
        or (status_of(error) == 404 and "point in time" in text.lower())
    )


def _unavailable(address: str, what: str, waited_s: float, error: BaseException) -> ElasticsearchUnavailableError:
    return ElasticsearchUnavailableError(
        f"Elasticsearch at {address} did not answer {what} for {waited_s:.0f} s "
        f"({type(error).__name__}: {error}). Check that the server is running and reachable "
        "(`python -m tauxcharge_assets es status`, or TAUXCHARGE_ES_URL and TAUXCHARGE_ES_API_KEY), "
        "then run the tick again."
    )


def retrying(
    call: Callable[[], T],
    *,
    what: str,
    client: Elasticsearch | None = None,
    deadline_s: float | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """``call()``, retried on transient errors with exponential backoff and jitter until a deadline.

    Waits 0.5 s doubling to 8 s (each wait drawn between half and all of that), until ``deadline_s``
    (default: the client's, see ``retry_deadline``) has passed since the first attempt; then raises
    ``ElasticsearchUnavailableError`` naming the address and what to check. ``on_retry`` runs before
    each new attempt (a scan reopens its point in time there). A refusal (401, 403) or an untrusted
    certificate raises ``ElasticsearchAccessError`` at once. Any other error is raised as is.
    """
    deadline = retry_deadline(client) if deadline_s is None else deadline_s
    started = time.monotonic()
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            return call()
        except Exception as error:  # filtered just below
            if is_access_denied(error) or is_untrusted_certificate(error):
                raise access_error(address_of(client), what, error) from None
            if not retry_if(error):
                raise
            waited = time.monotonic() - started
            if waited >= deadline:
                raise _unavailable(address_of(client), what, waited, error) from None
            pause = min(backoff, MAX_BACKOFF_S) * random.uniform(0.5, 1.0)
            time.sleep(min(pause, max(0.0, deadline - waited)))
            backoff *= 2
            if on_retry is not None:
                on_retry(error)


def connect(
    url: str,
    api_key: str | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
    request_timeout_s: float = 60.0,
    retry_deadline_s: float | None = None,
    security: Security | None = None,
) -> Elasticsearch:
    """A client whose server answered ``_cluster/health``; retried with backoff, then a clear error.

    ``ping()``/``info()`` cannot be used: the integ-test build answers ``GET /`` with 405. A refusal
    (401, 403) or an untrusted certificate fails at once with ``ElasticsearchAccessError``.
    """
    security = security or Security()
    if api_key:
        security = dataclasses.replace(security, api_key=api_key)
    client = Elasticsearch(
        url,
        **security.client_options(),
        serializer=OrjsonSerializer(),  # orjson decodes search pages several times faster than json
        request_timeout=request_timeout_s,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=TRANSIENT_STATUSES,
    )
    if retry_deadline_s is not None:
        set_retry_deadline(client, retry_deadline_s)
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            client.cluster.health(wait_for_status="yellow", timeout="30s")
            return client
        except (TransportError, ApiError) as error:
            if is_access_denied(error) or is_untrusted_certificate(error):
                raise access_error(url, "_cluster/health", error) from None
            last_error = error
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    raise ElasticsearchUnavailableError(
        f"Elasticsearch at {url} did not answer _cluster/health after {attempts} attempt{'s' if attempts != 1 else ''} "
        f"({type(last_error).__name__}: {last_error}). Start the local server with "
        "`python -m tauxcharge_assets es start`, or set TAUXCHARGE_ES_URL (and TAUXCHARGE_ES_API_KEY) "
        "to a reachable server."
    )
