"""Critical anomalies as alerts: one message per tick that starts episodes, one line per new episode.

A tick with no critical anomaly costs nothing here (no request); with some, one search of the recent
events, one write of this tick's, one request of claims, and at most one message.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from tauxcharge_assets.alerts.episodes import EPISODE_GAP, AlertLedger, Event, Outcome, alert_once
from tauxcharge_assets.settings import to_utc

KIND = "anomaly"
LISTED = 20  # lines in one message; a storm over many names says how many more are in the anomalies index


def critical_events(scored: pd.DataFrame) -> list[Event]:
    """An event per critical row (name, timestamp, score, reason) of the report's scored table."""
    critical = scored.loc[scored["severity"] == "critical"]
    return [
        Event(
            KIND,
            str(row.name),
            to_utc(row.timestamp),
            f"{row.name} at {to_utc(row.timestamp):%Y-%m-%d %H:%M} UTC, score {row.score:.2f} ({row.evidence}): "
            f"{row.reason}",
        )
        for row in critical.itertuples(index=False)
    ]


def anomaly_message(events: list[Event], partition_key: str, anomalies_index: str) -> str:
    """The words sent: a header, then one line per new episode (at most ``LISTED``)."""
    header = (
        f"Critical anomaly (tick {partition_key}): " if len(events) == 1
        else f"{len(events)} critical anomalies start new episodes (tick {partition_key}):"
    )  # fmt: skip
    if len(events) == 1:
        return header + events[0].line
    lines = [f"- {event.line}" for event in events[:LISTED]]
    if len(events) > LISTED:
        lines.append(f"- and {len(events) - LISTED} more: see the index {anomalies_index}")
    return "\n".join([header, *lines])


def alert_critical_anomalies(
    ledger: AlertLedger,
    scored: pd.DataFrame,
    partition_key: str,
    anomalies_index: str,
    send_text: Callable[[str], None],
    now: pd.Timestamp,
    max_age: pd.Timedelta | None,
    gap: pd.Timedelta = EPISODE_GAP,
) -> Outcome:
    """Announce the episodes of critical anomalies this tick starts (or that no run announced yet)."""
    events = critical_events(scored)
    return alert_once(
        ledger,
        events,
        lambda new: send_text(anomaly_message(new, partition_key, anomalies_index)),
        now,
        gap=gap,
        max_age=max_age,
        partition_key=partition_key,
    )
