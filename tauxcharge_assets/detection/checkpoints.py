"""Hourly checkpoints of the detector's per-name state, so a backfill scores exactly like the live run.

The detector's state at the top of hour ``h`` (after every slot before ``h``) is saved by the tick that
ends at ``h``; the tick scoring slot ``s`` starts from the checkpoint of ``s``'s hour and replays the at
most 12 slots since then from the window it already holds, read as of its own end. A live tick and a
later backfill of the same partition therefore start from the same checkpoint and read the same data:
the same scores, whatever arrived late in between. Without a checkpoint (a new deployment, or one
older than the retention), the tick replays its whole 24 h window from a fresh state: still the same
for live and backfill, but the likelihood needs 388 slots of history before it scores again.

Checkpoints live in Elasticsearch (documents of 500 names per hour, the state in ``_source`` only:
~0.7 KiB per name), so any worker finds them, with the last one also kept in this process's memory
and on local disk so a steady tick reads nothing. Documents older than ``keep_days`` are deleted by id
when a new checkpoint is written (this build has no delete-by-query or ILM).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.data.shards import UNSHARDED, Shard
from tauxcharge_assets.detection.detector import FIELDS, DetectorConfig, DetectorState
from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, deterministic_id, scan_pages
from tauxcharge_assets.settings import to_utc
from tauxcharge_assets.window.store import WindowStore

NAMES_PER_DOCUMENT = 500  # ~460 KB of base64 per document at 86 values per name


@dataclass(frozen=True)
class Checkpoint:
    """The detector's state after every slot before ``end`` (the top of an hour)."""

    end: pd.Timestamp
    state: DetectorState


def checkpoint_hour(slot: pd.Timestamp) -> pd.Timestamp:
    """The checkpoint a tick scoring ``slot`` starts from: the top of ``slot``'s hour."""
    return to_utc(slot).floor("h")


def state_documents(
    checkpoint: Checkpoint, names_per_document: int = NAMES_PER_DOCUMENT, shard: Shard = UNSHARDED
) -> list[tuple[str, dict]]:
    """The state in documents of ``names_per_document`` names each (names sorted), every array as the
    base64 of its float64 bytes: exact, infinities included, and ~40x less JSON than one list per name
    (measured at 10,000 names: 12 s to write as 10,000 documents of number lists). Ids come from the
    hour, the name shard and the chunk: rewriting a checkpoint never duplicates it, shards never collide."""
    state = checkpoint.state
    order = np.argsort(np.asarray(state.names, dtype=object), kind="stable")
    at = to_utc(checkpoint.end).isoformat()
    documents = []
    for chunk, start in enumerate(range(0, len(order), names_per_document)):
        columns = order[start : start + names_per_document]
        arrays = {
            field: base64.b64encode(
                np.ascontiguousarray(getattr(state, field)[..., columns], np.float64).tobytes()
            ).decode("ascii")
            for field in FIELDS
        }
        body = {"names": [state.names[j] for j in columns], "arrays": arrays}
        document = {"checkpoint_at": at, "chunk": chunk, "chunks": -(-len(order) // names_per_document),
                    "day": state.day, "state": body}  # fmt: skip
        if shard.sharded:
            document["shard"] = shard.label
        ids = ("detector-state", at, shard.suffix, chunk) if shard.sharded else ("detector-state", at, chunk)
        documents.append((deterministic_id(*ids), document))
    return documents


def state_from_documents(hits: list[dict[str, Any]], config: DetectorConfig) -> DetectorState | None:
    """The state the documents of one checkpoint hold; None when there are none, or when they were written
    by a detector with other state fields (a deployment changed it: the tick then starts afresh)."""
    if not hits or any(set(hit["state"]["arrays"]) != set(FIELDS) for hit in hits):
        return None
    if {hit["chunk"] for hit in hits} != set(range(hits[0].get("chunks", -1))):
        return None  # a chunk missing or left over: an incomplete checkpoint is no checkpoint
    hits = sorted(hits, key=lambda hit: hit["chunk"])
    names = [name for hit in hits for name in hit["state"]["names"]]
    state = DetectorState.new(names, config)
    position = 0
    for hit in hits:
        count = len(hit["state"]["names"])
        for field in FIELDS:
            target = getattr(state, field)
            rows = target.shape[0] if target.ndim == 2 else None
            values = np.frombuffer(base64.b64decode(hit["state"]["arrays"][field]), dtype=np.float64)
            target[..., position : position + count] = values.reshape((rows, count) if rows else (count,))
        position += count
    days = [hit["day"] for hit in hits if hit["day"] is not None]
    state.day = max(days) if days else None
    return state


@dataclass(frozen=True)
class CheckpointStore:
    """Checkpoints in the detector-state index, with the newest cached on local disk."""

    client: Elasticsearch
    index: str
    config: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    keep_days: int = 7
    shard: Shard = UNSHARDED

    @property
    def local(self) -> WindowStore:
        return WindowStore.for_index(self.index + self.shard.suffix, kind=Checkpoint, folder="detector_state")

    def load(self, end: pd.Timestamp) -> Checkpoint | None:
        """The checkpoint of ``end``: this worker's cached copy, else Elasticsearch's."""
        cached = self.local.load(to_utc(end))
        if cached is not None and all(hasattr(cached.state, field) for field in FIELDS):
            return cached
        return self.read(end)

    def read(self, end: pd.Timestamp) -> Checkpoint | None:
        """The checkpoint of ``end`` as Elasticsearch holds it (what a new worker finds)."""
        end = to_utc(end)
        unsharded = {"bool": {"must_not": {"exists": {"field": "shard"}}}}
        own = {"term": {"shard": self.shard.label}} if self.shard.sharded else unsharded
        query = {"bool": {"filter": [{"term": {"checkpoint_at": end.isoformat()}}, own]}}
        hits = [hit["_source"] for page in scan_pages(self.client, self.index, query, page_size=100) for hit in page]
        state = state_from_documents(hits, self.config)
        return None if state is None else Checkpoint(end, state)

    def save(self, checkpoint: Checkpoint) -> int:
        """Write the checkpoint (idempotent) and delete the checkpoints older than ``keep_days``."""
        written = bulk_write(self.client, self.index, state_documents(checkpoint, shard=self.shard), refresh=True)
        self.local.save(checkpoint)  # after Elasticsearch: a worker never scores from a state no one else sees
        expired = (to_utc(checkpoint.end) - pd.Timedelta(days=self.keep_days)).isoformat()
        old = {"range": {"checkpoint_at": {"lte": expired}}}
        ids = [hit["_id"] for page in scan_pages(self.client, self.index, old, with_ids=True, docvalue_fields=[])
               for hit in page]  # fmt: skip
        delete_documents(self.client, self.index, ids)
        return written
