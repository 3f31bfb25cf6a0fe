"""The rolling window kept in Elasticsearch too, every hour, so a new worker does not re-read 24 h.

A worker keeps its window on local disk (``window.store``); a new worker (a fresh machine, a pod
rescheduled, a shard moved) has none and would read the whole 24 h window: 2.9M documents, the largest
part of a cold tick at 10,000 names. The tick whose window ends on the hour also writes it here, and a
worker without a local window starts from the newest one here that ends within ``max_gap`` ticks, then
reads incrementally what came since, exactly as from its own previous window (an incremental read from
any earlier window equals a cold read: ``window.rolling``).

The window is stored as numpy arrays (``np.savez``, no pickle: what Elasticsearch returns is never
executed) with the names and recent ids as JSON, compressed (zlib level 1), base64 in ``binary``
fields of documents of at most ``CHUNK_BYTES``; ids come from the store key, the window's end and the
chunk, so rewriting never duplicates. Every chunk carries the digest of the whole: chunks of two writes
of one window (a writer that died half-way, two writers at once) are never mixed, and a window that
does not decode is skipped like a missing one. Windows more than ``keep_hours`` older than the one just
written are deleted by id, whatever their key (this build has no delete-by-query).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, deterministic_id, scan_pages
from tauxcharge_assets.settings import STEP_MINUTES, to_utc
from tauxcharge_assets.window.rolling import RollingWindow

CHUNK_BYTES = 8 * 2**20
FORMAT = 1
_DECODE_ERRORS = (zlib.error, ValueError, KeyError, OSError, json.JSONDecodeError, TypeError)
_ARRAYS = ("present", "count", "value", "ingested", "off_grid", "slot_documents", "slot_unplaced", "slot_non_numeric")


def window_bytes(window: RollingWindow) -> bytes:
    """The window as compressed bytes: numeric arrays in an npz, the strings as JSON."""
    buffer = io.BytesIO()
    arrays = {name: getattr(window, name) for name in _ARRAYS}
    arrays |= {f"extra_{key}": value for key, value in window.extra.items()}
    arrays |= {f"recent_{key}": value for key, value in window.recent.items() if key != "id"}
    header = {
        "format": FORMAT,
        "end_slot": int(window.end_slot),
        "steps": int(window.steps),
        "overlap_ns": int(window.overlap_ns),
        "newest_ns": int(window.newest_ns),
        "names": [str(name) for name in window.names],
        "recent_ids": [str(doc_id) for doc_id in window.recent["id"]],
    }
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    return zlib.compress(buffer.getvalue(), 1)


def window_from_bytes(data: bytes) -> RollingWindow | None:
    """The window ``window_bytes`` wrote; None for another format."""
    with np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False) as stored:
        header = json.loads(stored["header"].tobytes().decode())
        if header.get("format") != FORMAT:
            return None
        return RollingWindow(
            end_slot=header["end_slot"],
            steps=header["steps"],
            overlap_ns=header["overlap_ns"],
            names=np.array(header["names"], dtype=object),
            newest_ns=header["newest_ns"],
            extra={key[6:]: stored[key] for key in stored.files if key.startswith("extra_")},
            recent={
                "id": np.array(header["recent_ids"], dtype=object),
                **{key[7:]: stored[key] for key in stored.files if key.startswith("recent_")},
            },
            **{name: stored[name] for name in _ARRAYS},
        )


@dataclass(frozen=True)
class SharedWindowStore:
    """Hourly windows of one store ``key`` (the metrics index, plus a name shard's suffix) in ``index``."""

    client: Elasticsearch
    index: str
    key: str
    keep_hours: int = 26

    def due(self, window: RollingWindow) -> bool:
        """Whether this window is one to keep here: it ends on the hour."""
        return window.end.minute == 0

    def save(self, window: RollingWindow) -> int:
        data = base64.b64encode(window_bytes(window)).decode("ascii")
        digest = hashlib.sha256(data.encode("ascii")).hexdigest()
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [""]
        at = window.end.isoformat()
        documents = [
            (
                deterministic_id("window-state", self.key, at, number),
                {
                    "key": self.key,
                    "window_end": at,
                    "chunk": number,
                    "chunks": len(chunks),
                    "digest": digest,
                    "state": chunk,
                },
            )
            for number, chunk in enumerate(chunks)
        ]
        written = bulk_write(self.client, self.index, documents, chunk_size=1, refresh=True)
        this_window = [{"term": {"key": self.key}}, {"term": {"window_end": at}}]
        leftover = {"bool": {"filter": this_window, "must_not": {"term": {"digest": digest}}}}  # an older write's
        expired = {"range": {"window_end": {"lt": (window.end - pd.Timedelta(hours=self.keep_hours)).isoformat()}}}
        for query in (leftover, expired):
            ids = [hit["_id"] for page in scan_pages(self.client, self.index, query, with_ids=True, docvalue_fields=[])
                   for hit in page]  # fmt: skip
            delete_documents(self.client, self.index, ids)
        return written

    def latest_before(self, end: pd.Timestamp, max_gap: int = 12) -> RollingWindow | None:
        """The newest complete window here ending in ``[end - max_gap steps, end)``."""
        end = to_utc(end)
        since = end - max_gap * pd.Timedelta(minutes=STEP_MINUTES)
        within = {"range": {"window_end": {"gte": since.isoformat(), "lt": end.isoformat()}}}
        query = {"bool": {"filter": [{"term": {"key": self.key}}, within]}}
        writes = _writes(self.client, self.index, query)
        for window_end, digest in sorted(writes, reverse=True):
            hits = sorted(writes[window_end, digest], key=lambda hit: hit["chunk"])
            if [hit["chunk"] for hit in hits] != list(range(hits[0]["chunks"])):
                continue  # a chunk missing (a writer died mid-way): an older window, or a cold read
            data = "".join(hit["state"] for hit in hits)
            if hashlib.sha256(data.encode("ascii")).hexdigest() != digest:
                continue
            try:
                window = window_from_bytes(base64.b64decode(data))
            except _DECODE_ERRORS:
                continue  # written by another version of this code: as if missing
            if window is not None and window.end == window_end:
                return window
        return None


def _writes(
    client: Elasticsearch, index: str, query: dict[str, Any]
) -> dict[tuple[pd.Timestamp, str], list[dict[str, Any]]]:
    """The chunks found, by (window end, digest of the write they belong to)."""
    found: dict[tuple[pd.Timestamp, str], list[dict[str, Any]]] = {}
    for page in scan_pages(client, index, query, page_size=10):
        for hit in page:
            source = hit["_source"]
            found.setdefault((to_utc(source["window_end"]), str(source.get("digest"))), []).append(source)
    return found
