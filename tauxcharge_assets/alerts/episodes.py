"""One alert per episode, whoever meets it: the live tick, its rerun, a backfill, the failure sensor.

An *episode* of a subject (a name, a job's step) is its run of events: an event with no event of the same
subject in the ``gap`` (an hour) before it starts a new one. Every event is recorded in ``<prefix>-alerts``
(id = kind, subject, time: a rerun rewrites it) with its episode's start, so a later run knows whether its
event continues an episode. Before a message goes out its episode is *claimed*: a document whose id is
(kind, subject, episode start), created with ``op_type=create``; 409 means some run already sent it. When
sending fails the claims are deleted, so a retry sends again. This build has no update-by-query or scripts:
create, index, delete by id and searches only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, deterministic_id, scan_pages
from tauxcharge_assets.elastic.client import retrying
from tauxcharge_assets.settings import to_utc

EPISODE_GAP = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class Event:
    """Something to alert on: ``kind`` ("anomaly", "run_failure"), whose, when, and its line of the message."""

    kind: str
    subject: str
    at: pd.Timestamp
    line: str


@dataclass(frozen=True)
class Outcome:
    """What one batch of events did: the events whose episode this call announced, the rest by reason."""

    events: int
    sent: list[Event] = field(default_factory=list)
    already_sent: int = 0
    too_old: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "alert_events": self.events,
            "alerts_sent": len(self.sent),
            "alert_episodes_already_sent": self.already_sent,
            "alert_events_too_old_to_send": self.too_old,
        }


def episode_starts(
    events: Sequence[Event], earlier: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]], gap: pd.Timedelta
) -> list[pd.Timestamp]:
    """The episode start of each event: that of the subject's newest event in ``[at - gap, at)`` (recorded
    ``earlier`` as (at, start), or earlier in ``events``), else its own time. Only events strictly before
    count, so a rerun of any partition finds the start the first run found."""
    known: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {s: list(v) for s, v in earlier.items()}
    starts: dict[int, pd.Timestamp] = {}
    for i in sorted(range(len(events)), key=lambda i: events[i].at):
        event = events[i]
        before = [(at, start) for at, start in known.get(event.subject, []) if event.at - gap <= at < event.at]
        starts[i] = max(before)[1] if before else event.at
        known.setdefault(event.subject, []).append((event.at, starts[i]))
    return [starts[i] for i in range(len(events))]


class AlertLedger:
    """The events and claims of one deployment, in ``<prefix>-alerts``."""

    def __init__(self, client: Elasticsearch, index: str) -> None:
        self.client, self.index = client, index

    def earlier(
        self, kind: str, subjects: Iterable[str], since: pd.Timestamp, until: pd.Timestamp
    ) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
        """Recorded events of ``subjects`` in ``[since, until)``, as (at, episode start) per subject."""
        query = {
            "bool": {
                "filter": [
                    {"term": {"record": "event"}},
                    {"term": {"kind": kind}},
                    {"terms": {"subject": sorted(set(subjects))}},
                    {"range": {"at": {"gte": to_utc(since).isoformat(), "lt": to_utc(until).isoformat()}}},
                ]
            }
        }
        found: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        for page in scan_pages(self.client, self.index, query, source=["subject", "at", "episode_start"]):
            for hit in page:
                source = hit["_source"]
                found.setdefault(source["subject"], []).append(
                    (to_utc(source["at"]), to_utc(source["episode_start"]))
                )
        return found

    def record(self, events: Sequence[Event], starts: Sequence[pd.Timestamp], **fields: str) -> int:
        """Each event with its episode's start; a rerun rewrites the same ids."""
        documents = [
            (
                deterministic_id("alert-event", e.kind, e.subject, e.at.isoformat()),
                {
                    "record": "event",
                    "kind": e.kind,
                    "subject": e.subject,
                    "at": e.at.isoformat(),
                    "episode_start": start.isoformat(),
                    **fields,
                },
            )
            for e, start in zip(events, starts, strict=True)
        ]
        return bulk_write(self.client, self.index, documents)

    @staticmethod
    def claim_id(kind: str, subject: str, start: pd.Timestamp) -> str:
        return deterministic_id("alert-claim", kind, subject, to_utc(start).isoformat())

    def claim(self, claims: Sequence[tuple[str, str, pd.Timestamp]], now: pd.Timestamp) -> list[bool]:
        """Create one claim per (kind, subject, episode start) in one request: True where this call created
        it, False where it existed (409). A request resent after a lost answer finds its own claims by token."""
        if not claims:
            return []
        token, retried = uuid.uuid4().hex, [False]
        operations: list[dict[str, Any]] = []
        for kind, subject, start in claims:
            operations.append({"create": {"_id": self.claim_id(kind, subject, start)}})
            operations.append({"record": "claim", "kind": kind, "subject": subject, "at": now.isoformat(),
                               "episode_start": to_utc(start).isoformat(), "token": token})  # fmt: skip
        response = retrying(
            lambda: self.client.bulk(index=self.index, operations=operations, filter_path="items.*.status,items.*._id"),
            what=f"claiming alerts in {self.index}",
            client=self.client,
            on_retry=lambda _error: retried.__setitem__(0, True),
        )
        statuses = [next(iter(item.values())) for item in response["items"]]
        created = [item["status"] == 201 for item in statuses]
        unexpected = [item for item in statuses if item["status"] not in (201, 409)]
        if unexpected:
            raise RuntimeError(f"Elasticsearch refused an alert claim in {self.index}: {unexpected[0]}")
        if retried[0]:  # a 409 may be this call's own claim, created by an attempt whose answer was lost
            ids = [item["_id"] for item, made in zip(statuses, created, strict=True) if not made]
            mine = {
                doc["_id"]
                for doc in retrying(
                    lambda: self.client.mget(index=self.index, ids=ids, source=["token"])["docs"],
                    what=f"reading alert claims in {self.index}",
                    client=self.client,
                )
                if doc.get("found") and doc["_source"].get("token") == token
            }
            created = [made or item["_id"] in mine for item, made in zip(statuses, created, strict=True)]
        return created

    def release(self, claims: Sequence[tuple[str, str, pd.Timestamp]]) -> None:
        """Delete claims whose message could not be sent, so a retry sends it."""
        delete_documents(self.client, self.index, [self.claim_id(*claim) for claim in claims], refresh=False)


def alert_once(
    ledger: AlertLedger,
    events: Sequence[Event],
    send: Callable[[list[Event]], None],
    now: pd.Timestamp,
    gap: pd.Timedelta = EPISODE_GAP,
    max_age: pd.Timedelta | None = None,
    **fields: str,
) -> Outcome:
    """Record ``events``, then ``send`` the first event of each episode no run has announced yet (one call,
    nothing when all were). Events older than ``max_age`` at ``now`` (a backfill of the past) are recorded, so
    their episodes continue, but never sent. If ``send`` raises, the claims are released and it propagates."""
    if not events:
        return Outcome(0)
    kinds = {event.kind for event in events}
    earlier: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for kind in kinds:
        mine = [e for e in events if e.kind == kind]
        found = ledger.earlier(kind, [e.subject for e in mine], min(e.at for e in mine) - gap, max(e.at for e in mine))
        for subject, items in found.items():
            earlier.setdefault(f"{kind}\x1f{subject}", []).extend(items)
    keyed = [Event(e.kind, f"{e.kind}\x1f{e.subject}", e.at, e.line) for e in events]
    starts = episode_starts(keyed, earlier, gap)
    ledger.record(events, starts, **fields)
    fresh = [(e, start) for e, start in zip(events, starts, strict=True) if max_age is None or now - e.at <= max_age]
    first: dict[tuple[str, str, pd.Timestamp], Event] = {}
    for event, start in sorted(fresh, key=lambda pair: pair[0].at):
        first.setdefault((event.kind, event.subject, start), event)
    claims = list(first)
    created = ledger.claim(claims, now)
    mine = [claim for claim, made in zip(claims, created, strict=True) if made]
    if mine:
        try:
            send([first[claim] for claim in mine])
        except BaseException:
            ledger.release(mine)
            raise
    return Outcome(
        events=len(events),
        sent=[first[claim] for claim in mine],
        already_sent=len(claims) - len(mine),
        too_old=len(events) - len(fresh),
    )
