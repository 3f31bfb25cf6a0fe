"""The failures a user can fix, in one place: what each one prints and the exit code it gives.

An expected failure prints one line (what happened, what to do) and no traceback: a traceback says
"bug" to a user, and here there is none. ``--debug`` shows it anyway. Anything not listed here is a
bug and keeps its traceback.

Exit codes: 2 when the command line or the input is wrong (as argparse does for usage errors), 1 when
something outside the command is not ready (a server, a port, the model registry's champion).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2

_debug = False


def configure(debug: bool) -> None:
    """``--debug``: tracebacks, and Dagster's own failure logs, are shown."""
    global _debug
    _debug = debug


class UserFacingError(Exception):
    """An expected failure: a one-line message saying what happened and what to do, and its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Library exceptions that are expected failures: (module, class name, exit code, prefix of the message).
# Looked up by name in modules already imported: an exception of a module never imported cannot have
# been raised, and importing Dagster or Elasticsearch just to compare classes would cost seconds.
KNOWN_FAILURES: tuple[tuple[str, str, int, str], ...] = (
    ("tauxcharge_assets.elastic.client", "ElasticsearchUnavailableError", EXIT_UNAVAILABLE, ""),
    ("tauxcharge_assets.elastic.client", "ElasticsearchAccessError", EXIT_UNAVAILABLE, ""),
    ("tauxcharge_assets.elastic.server", "LocalElasticsearchError", EXIT_UNAVAILABLE, ""),
    ("tauxcharge_assets.elastic.bulk", "BulkWriteError", EXIT_UNAVAILABLE, ""),
    # A registered version whose files are damaged or do not fit the code (e.g. `promote --version N`).
    ("tauxcharge_assets.model.registry", "ModelArtifactError", EXIT_UNAVAILABLE, ""),
    # `ingest`: a wrong mapping, file or payload is bad input; an endpoint down or failing is a service.
    ("tauxcharge_assets.ingestion.records", "IngestInputError", EXIT_USAGE, ""),
    ("tauxcharge_assets.ingestion.http_pull", "EndpointUnavailableError", EXIT_UNAVAILABLE, ""),
    # The connection dropped or timed out after it was established (the server stopped, or is overloaded).
    ("elasticsearch", "ConnectionError", EXIT_UNAVAILABLE, "Lost the connection to Elasticsearch: "),
    ("elasticsearch", "ConnectionTimeout", EXIT_UNAVAILABLE, "Elasticsearch did not answer in time: "),
    # An asset refused to run, e.g. the forecasts asset without a champion model; its text says what to do.
    ("dagster", "Failure", EXIT_UNAVAILABLE, ""),
)

HINTS = {
    "ConnectionError": " Check the server (`python -m tauxcharge_assets es status`) and run the command again.",
    "ConnectionTimeout": " Check the server (`python -m tauxcharge_assets es status`) and run the command again.",
}


def _loaded_class(module: str, name: str) -> type | None:
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def unwrap(error: BaseException) -> BaseException:
    """The user code's exception inside Dagster's wrappers (``DagsterExecutionStepExecutionError``, the
    error a ``RetryPolicy`` raises once its retries are spent, ...)."""
    wrapper = _loaded_class("dagster", "DagsterError")
    seen: set[int] = set()
    while wrapper is not None and isinstance(error, wrapper) and id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "user_exception", None) or error.__cause__
        if not isinstance(inner, BaseException) and hasattr(error, "failure_message"):  # no cause: keep it
            break
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def one_line(text: str) -> str:
    """The first line of a message; a server's log tail or a stack after it is for ``--debug``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "failed without a message (run again with --debug for the traceback)"
    if len(lines) > 1:
        return f"{lines[0]} (--debug shows the details)"
    return lines[0]


def user_facing(error: BaseException) -> UserFacingError | None:
    """The expected failure ``error`` is (possibly inside Dagster's wrappers), or None for a bug."""
    error = unwrap(error)
    if isinstance(error, UserFacingError):
        return UserFacingError(one_line(str(error)), error.exit_code)
    # Retries spent (a RetryPolicy): Dagster keeps only the serialised errors; the last cause is ours.
    for info in getattr(error, "user_code_process_error_infos", None) or []:
        while info is not None:
            for _module, name, exit_code, prefix in KNOWN_FAILURES:
                if info.cls_name == name:
                    message = info.message.split(": ", 1)[-1] if ": " in info.message else info.message
                    return UserFacingError(one_line(prefix + message) + HINTS.get(name, ""), exit_code)
            info = info.cause
    for module, name, exit_code, prefix in KNOWN_FAILURES:
        known = _loaded_class(module, name)
        if known is not None and isinstance(error, known):
            message = getattr(error, "description", None) or str(error) or type(error).__name__
            return UserFacingError(one_line(prefix + str(message)) + HINTS.get(name, ""), exit_code)
    return None


@contextlib.contextmanager
def quiet_run_failures() -> Iterator[None]:
    """Dagster's console logger at CRITICAL around runs whose failure the command reports in one line.

    A failed run logs its step failure and its run failure at ERROR with their stacks (about 180
    lines for a tick), before the exception reaches the command line or, for the retrain job, before
    ``latest_run_failure`` reads why. The events are still stored in the Dagster instance (``dagster
    dev`` shows them); ``--debug`` prints them here too.
    """
    from tauxcharge_assets.cli import runner

    config: dict[str, str] = runner.QUIET["loggers"]["console"]["config"]
    before = config["log_level"]
    if not _debug:
        config["log_level"] = "CRITICAL"
    try:
        yield
    finally:
        config["log_level"] = before


def latest_run_failure(instance: Any) -> str | None:
    """The first failed step of the Dagster instance's latest run and why, in one line (or None).

    For runs started with ``raise_on_error=False`` (the retrain job, whose champion step fails by
    design when the gate keeps the previous champion): the exception stays inside Dagster's events.
    """
    from dagster import DagsterEventType

    runs = instance.get_runs(limit=1)
    if not runs:
        return None
    for entry in instance.all_logs(runs[0].run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return f"step {event.step_key}: {one_line(data.user_failure_data.description)}"
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause  # the user's exception inside Dagster's wrapper
        if error is None:
            return f"step {event.step_key} failed"
        head, separator, rest = error.message.strip().partition(": ")
        message = f"{error.cls_name}: {rest}" if separator and head.endswith(error.cls_name) else error.message
        return f"step {event.step_key}: {one_line(message)}"
    return None
