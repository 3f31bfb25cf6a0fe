"""Hourly checkpoints of the detector's per-name state, so a backfill scores exactly like the live run.

The detector's state at the top of hour ``h`` (after every slot before ``h``) is saved by the tick that
ends at ``h``; the tick scoring slot ``s`` starts from the checkpoint of ``s``'s hour and replays the at
most 12 slots since then from the window it already holds, read as of its own end. A live tick and a
later backfill of the same partition therefore start from the same checkpoint and read the same data:
the same scores, whatever arrived late in between. Without a checkpoint (a new deployment, or one
older than the retention), the tick replays its whole 24 h window from a fresh state: still the same
for live and backfill, but the likelihood needs 388 slots of history before it scores again.

Checkpoints live in Elasticsearch (one document per name and hour, the state in ``_source`` only:
~0.7 KiB per name), so any worker finds them, with the last one also kept in this process's memory
and on local disk so a steady tick reads nothing. Documents older than ``keep_days`` are deleted by id
when a new checkpoint is written (this build has no delete-by-query or ILM).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.detection.detector import FIELDS, DetectorConfig, DetectorState
from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, deterministic_id, scan_pages
from tauxcharge_assets.settings import to_utc
from tauxcharge_assets.window.store import WindowStore

_ROWS = {"ring", "low", "high"}  # (k, n) arrays; the others are (n,)


@dataclass(frozen=True)
class Checkpoint:
    """The detector's state after every slot before ``end`` (the top of an hour)."""

    end: pd.Timestamp
    state: DetectorState


def checkpoint_hour(slot: pd.Timestamp) -> pd.Timestamp:
    """The checkpoint a tick scoring ``slot`` starts from: the top of ``slot``'s hour."""
    return to_utc(slot).floor("h")


def _encode(values: np.ndarray) -> list[float | None]:
    """JSON has no infinity: the empty days of the range ring are stored as null."""
    return [None if not np.isfinite(v) else float(v) for v in values]


def _decode(values: list[float | None], empty: float) -> np.ndarray:
    return np.array([empty if v is None else v for v in values], dtype=np.float64)


def state_documents(checkpoint: Checkpoint) -> list[tuple[str, dict[str, Any]]]:
    """One document per name, id from (name, hour): rewriting a checkpoint never duplicates it."""
    state, at = checkpoint.state, to_utc(checkpoint.end).isoformat()
    documents = []
    for j, name in enumerate(state.names):
        fields = {k: _encode(getattr(state, k)[:, j] if k in _ROWS else getattr(state, k)[j : j + 1]) for k in FIELDS}
        documents.append(
            (deterministic_id("detector-state", name, at), {"name": name, "checkpoint_at": at, "day": state.day,
                                                             "state": fields})
        )  # fmt: skip
    return documents


def state_from_documents(hits: list[dict[str, Any]], config: DetectorConfig) -> DetectorState | None:
    """The state of the names found (in name order); None when there are none."""
    if not hits:
        return None
    hits = sorted(hits, key=lambda hit: hit["name"])
    state = DetectorState.new([hit["name"] for hit in hits], config)
    for j, hit in enumerate(hits):
        for field in FIELDS:
            empty = np.inf if field == "low" else -np.inf if field == "high" else 0.0
            values = _decode(hit["state"][field], empty)
            if field in _ROWS:
                getattr(state, field)[:, j] = values
            else:
                getattr(state, field)[j] = values[0]
    days = {hit["day"] for hit in hits}
    state.day = days.pop() if len(days) == 1 else max(d for d in days if d is not None)
    return state


@dataclass(frozen=True)
class CheckpointStore:
    """Checkpoints in the detector-state index, with the newest cached on local disk."""

    client: Elasticsearch
    index: str
    config: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    keep_days: int = 7

    @property
    def local(self) -> WindowStore:
        return WindowStore.for_index(self.index, kind=Checkpoint, folder="detector_state")

    def load(self, end: pd.Timestamp) -> Checkpoint | None:
        end = to_utc(end)
        cached = self.local.load(end)
        if cached is not None:
            return cached
        query = {"term": {"checkpoint_at": end.isoformat()}}
        hits = [hit["_source"] for page in scan_pages(self.client, self.index, query) for hit in page]
        state = state_from_documents(hits, self.config)
        return None if state is None else Checkpoint(end, state)

    def save(self, checkpoint: Checkpoint) -> int:
        """Write the checkpoint (idempotent) and delete the same names' checkpoint ``keep_days`` older."""
        self.local.save(checkpoint)
        written = bulk_write(self.client, self.index, state_documents(checkpoint), refresh=True)
        expired = (to_utc(checkpoint.end) - pd.Timedelta(days=self.keep_days)).isoformat()
        delete_documents(
            self.client, self.index, [deterministic_id("detector-state", n, expired) for n in checkpoint.state.names]
        )
        return written
