"""Failed runs as alerts: which job, which partition, which steps (a failed blocking check is a failed check
step) and each one's one-line error; one message per episode of failures of the same job and step."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from tauxcharge_assets.alerts.episodes import EPISODE_GAP, AlertLedger, Event, Outcome, alert_once

KIND = "run_failure"
MAX_LINE = 300


@dataclass(frozen=True)
class FailedRun:
    """What the sensor knows of a failed run."""

    job: str
    run_id: str
    partition_key: str | None
    at: pd.Timestamp  # the partition's time, else when the run was created
    failed_steps: dict[str, str]  # step key -> error message (empty: the run failed outside any step)
    run_message: str


_ERROR_CLASS = re.compile(r"^[\w.]*(Error|Exception|Failure): ")


def one_line(message: str) -> str:
    """An error message on one line without its exception's module path, cut to ``MAX_LINE`` characters."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip()) or "no message"
    line = _ERROR_CLASS.sub("", line)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def check_failure(check_name: str, asset: str, numbers: Mapping[str, object]) -> str:
    """A failed blocking check in words, with the numbers it judged (its scalar metadata)."""
    shown = ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in numbers.items()
        if isinstance(value, (str, int, float, bool))
    )
    return f"blocking check {check_name} of {asset} failed" + (f" ({shown})" if shown else "")


def failure_events(run: FailedRun) -> list[Event]:
    """One event per failed step, its subject ``job:step``; a run that failed outside any step is ``job:run``."""
    steps = run.failed_steps or {"run": run.run_message}
    return [Event(KIND, f"{run.job}:{step}", run.at, f"step {step}: {one_line(message)}")
            for step, message in sorted(steps.items())]  # fmt: skip


def failure_message(run: FailedRun, events: Sequence[Event]) -> str:
    where = f" for partition {run.partition_key}" if run.partition_key else ""
    return "\n".join([f"{run.job} failed{where} (run {run.run_id}):", *(f"- {event.line}" for event in events)])


def alert_failed_run(
    ledger: AlertLedger, run: FailedRun, send_text: Callable[[str], None], now: pd.Timestamp,
    gap: pd.Timedelta = EPISODE_GAP,
) -> Outcome:  # fmt: skip
    """One message naming the failed steps that start an episode; nothing when every one continues one."""
    return alert_once(
        ledger,
        failure_events(run),
        lambda new: send_text(failure_message(run, new)),
        now,
        gap=gap,
        run_id=run.run_id,
        **({"partition_key": run.partition_key} if run.partition_key else {}),
    )
