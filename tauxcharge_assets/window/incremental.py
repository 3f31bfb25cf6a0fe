"""Incremental fetch: a tick reads only what is new since the previous tick's window.

With the previous window (ending at ``E'``) a tick ending at ``E`` reads, as of ``E``, the documents
of its 24 h window whose timestamp is at or after ``E' - overlap`` **or** that arrived (``ingested_at``)
after ``E' - overlap``. That is every document a cold read would see and the previous window did not,
provided a document becomes searchable within ``overlap`` of its ``ingested_at``: the new slices, the
late documents of any older slot, and those indexed a little after the previous tick ran. Documents
of this read that the previous window already holds are recognised by id and skipped.

A cold read (the whole window) happens when no window of the previous ``max_gap`` ticks is stored,
e.g. on the first tick, at the start of a backfill, or after the store was cleaned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.data.documents import DocumentBatch, read_batch, read_window, since_query
from tauxcharge_assets.data.shards import Shard
from tauxcharge_assets.settings import WINDOW_STEPS, to_utc
from tauxcharge_assets.window.rolling import (
    RollingWindow,
    add_documents,
    advance,
    empty_window,
    new_documents,
    remember_recent,
)
from tauxcharge_assets.window.shared_store import SharedWindowStore
from tauxcharge_assets.window.store import WindowStore


@dataclass(frozen=True)
class ReadReport:
    """How a tick got its window: what it read and why."""

    mode: str  # "incremental" or "cold"
    reason: str
    documents_read: int
    documents_added: int
    previous_end: str | None
    seconds: float


class Reader(Protocol):
    """Where documents come from: Elasticsearch in production, a list in unit tests."""

    def window(
        self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, recent_since: pd.Timestamp
    ) -> tuple[DocumentBatch, DocumentBatch]:
        """All of the window, as of ``as_of``, in one snapshot: (older without ids, recent with ids)."""
        ...

    def since(self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, since: pd.Timestamp) -> DocumentBatch:
        """The window's documents with a timestamp at or after ``since`` or arrived after it, with ids."""
        ...


@dataclass(frozen=True)
class ElasticsearchReader:
    client: Elasticsearch
    index: str
    only: dict[str, Any] | None = None  # a clause every read also filters on (a name shard's prefilter)

    def window(
        self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, recent_since: pd.Timestamp
    ) -> tuple[DocumentBatch, DocumentBatch]:
        return read_window(self.client, self.index, start, end, as_of, recent_since, only=self.only)

    def since(self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, since: pd.Timestamp) -> DocumentBatch:
        query = since_query(start, end, as_of, since, self.only)
        return read_batch(self.client, self.index, query, with_ids=True)


@dataclass(frozen=True)
class ShardReader:
    """Only one name shard's documents of another reader's (``data.shards``)."""

    reader: Reader
    shard: Shard

    def window(
        self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, recent_since: pd.Timestamp
    ) -> tuple[DocumentBatch, DocumentBatch]:
        older, recent = self.reader.window(start, end, as_of, recent_since)
        return self.shard.take(older), self.shard.take(recent)

    def since(self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp, since: pd.Timestamp) -> DocumentBatch:
        return self.shard.take(self.reader.since(start, end, as_of, since))


def cold_window(
    reader: Reader, end: pd.Timestamp, steps: int = WINDOW_STEPS, overlap_minutes: float = 10.0
) -> tuple[RollingWindow, int]:
    """The window of ``steps`` slots before ``end``, as of ``end``, from a full read; returns (window, read)."""
    window = empty_window(end, steps, overlap_minutes)
    older, recent = reader.window(window.start, window.end, window.end, window.recent_since)
    add_documents(window, older)
    add_documents(window, recent)
    remember_recent(window, recent)
    return window, len(older) + len(recent)


def incremental_window(reader: Reader, previous: RollingWindow, end: pd.Timestamp) -> tuple[RollingWindow, int, int]:
    """``previous`` moved to ``end`` with the documents it lacks; returns (window, read, added)."""
    end = to_utc(end)
    since = previous.recent_since
    window = advance(previous, end)
    delta = reader.since(window.start, end, end, since)
    fresh = new_documents(window, delta)
    add_documents(window, fresh)
    remember_recent(window, fresh)
    return window, len(delta), len(fresh)


def update_window(
    reader: Reader,
    end: pd.Timestamp,
    store: WindowStore | None,
    incremental: bool = True,
    overlap_minutes: float = 10.0,
    max_gap: int = 12,
    steps: int = WINDOW_STEPS,
    shared: SharedWindowStore | None = None,
) -> tuple[RollingWindow, ReadReport]:
    """This tick's window: from the stored previous one when usable (this worker's, else the hourly one in
    Elasticsearch), else a cold read; saved for the next tick (and in Elasticsearch when it ends on the hour)."""
    started = time.perf_counter()
    end = to_utc(end)
    previous = store.latest_before(end, max_gap) if (store is not None and incremental) else None
    from_shared = False
    if previous is None and shared is not None and incremental:
        previous = shared.latest_before(end, max_gap)
        from_shared = previous is not None
    overlap_ns = int(overlap_minutes * 60 * 10**9)
    if previous is not None and (previous.steps != steps or previous.overlap_ns != overlap_ns):
        reason, previous = "the stored window has another length or overlap", None
    elif previous is None:
        reason = (
            "incremental reads are off"
            if not incremental or store is None
            else (f"no stored window in the {max_gap} ticks before {end.isoformat()}")
        )
    else:
        where = " (a new worker: the hourly window kept in Elasticsearch)" if from_shared else ""
        reason = f"previous window ends {previous.end.isoformat()}{where}"
    if previous is None:
        window, read = cold_window(reader, end, steps, overlap_minutes)
        added, mode, previous_end = read, "cold", None
    else:
        window, read, added = incremental_window(reader, previous, end)
        mode, previous_end = "incremental", previous.end.isoformat()
    if store is not None:
        store.save(window)
    if shared is not None and shared.due(window):
        shared.save(window)
    return window, ReadReport(mode, reason, read, added, previous_end, time.perf_counter() - started)
