"""Bad metric documents listed one by one with their reason, so the collector at fault can be found.

The cleaning (``data.cleaning``) counts what its rules reject or rewrite; the quarantine names the
documents. Each document is examined by exactly one partition: the one during whose five minutes it
arrived (``ingested_at`` in ``(end - 5 min, end]``; without ``ingested_at``, its timestamp, as the
as-of reads treat it). A rerun or a backfill lists the same documents under the same ids.

A document's reason is the first of these that applies (the cleaning's rules, in their order):

- ``without_name``: no name, or an empty one. Rejected.
- ``without_timestamp``: no timestamp, or one that does not parse. Rejected: no time-window read
  ever sees it, so it is counted here or nowhere.
- ``too_late``: a timestamp older than the partition's 24 h window. Rejected: no window will hold it.
- ``future_timestamp``: a timestamp at or after the partition's end (a collector's clock). Not used
  by this tick; counted as rejected because a forecast was made without it.
- ``non_numeric``: a value Elasticsearch could not index as a number (strings, booleans, 1e308).
  Rejected.
- ``out_of_range``: a number outside ``[value_min, value_max]``. Rejected.
- ``off_grid``: a timestamp off the 5-minute grid. Rewritten: floored onto its slot.
- ``duplicate``: one of several valid documents for one (name, slot). The latest arrival is kept; on
  equal arrivals, the larger value. The entry says whether this one was kept (as of its tick).

Reading: Elasticsearch preselects the documents that can break a rule (a superset: missing or
malformed fields, values out of range, timestamps outside the window or off its grid,
names with several documents in one slot), and the rules above are applied here to doc values, the
same values the cleaning reads. A clean tick reads nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.data.cleaning import CleaningRules, in_range, kept_duplicates
from tauxcharge_assets.data.documents import DOC_VALUE_FIELDS, NAT, DocumentBatch, from_doc_values
from tauxcharge_assets.data.shards import Shard
from tauxcharge_assets.elastic.bulk import deterministic_id, scan_pages
from tauxcharge_assets.elastic.queries import _iso
from tauxcharge_assets.window.rolling import STEP_NS, RollingWindow

REJECTED = ("without_name", "without_timestamp", "too_late", "future_timestamp", "non_numeric", "out_of_range")
REWRITTEN = ("off_grid", "duplicate")
REASONS = REJECTED + REWRITTEN
SENT_FIELDS = ["timestamp", "name", "value", "ingested_at"]


def arrivals_query(after: pd.Timestamp, until: pd.Timestamp) -> dict[str, Any]:
    """Documents that arrived in ``(after, until]``: by ``ingested_at``, else by their own timestamp."""
    interval = {"gt": _iso(after), "lte": _iso(until)}
    return {
        "bool": {
            "should": [
                {"range": {"ingested_at": interval}},
                {
                    "bool": {
                        "must_not": {"exists": {"field": "ingested_at"}},
                        "filter": {"range": {"timestamp": interval}},
                    }
                },
            ],
            "minimum_should_match": 1,
        }
    }


def shard_arrivals_query(
    after: pd.Timestamp, until: pd.Timestamp, names: Sequence[str], with_nameless: bool
) -> dict[str, Any]:
    """The arrivals of ``(after, until]`` of one name shard: its ``names`` (those of its window and of its
    suspects: every name that can arrive there), and for shard 0 the documents without a name."""
    own: list[dict[str, Any]] = [{"terms": {"name": sorted(names)}}]
    if with_nameless:
        own += [_missing("name"), {"term": {"name": ""}}]
    return {"bool": {"filter": [arrivals_query(after, until)], "should": own, "minimum_should_match": 1}}


def _missing(field: str) -> dict[str, Any]:
    return {"bool": {"must_not": {"exists": {"field": field}}}}


def _duplicate_cells(window: RollingWindow, rules: CleaningRules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (as row * names + column) holding several valid documents, with the kept one's arrival and value."""
    cells, kept = kept_duplicates(window, rules)
    return cells, window.extra["ingested"][kept], window.extra["value"][kept]


def suspects_query(
    window: RollingWindow, rules: CleaningRules, after: pd.Timestamp, until: pd.Timestamp
) -> dict[str, Any]:
    """The arrivals of ``(after, until]`` that may break a rule: a superset of the bad ones, usually empty."""
    grid_ms = [int((window.start_slot + k) * STEP_NS // 1_000_000) for k in range(window.steps)]
    suspects: list[dict[str, Any]] = [
        _missing("name"),
        {"term": {"name": ""}},
        _missing("timestamp"),  # malformed ones too: an ``ignore_malformed`` field that failed does not exist
        _missing("value"),
        {"range": {"value": {"lt": rules.value_min}}},
        {"range": {"value": {"gt": rules.value_max}}},
        {"range": {"timestamp": {"lt": _iso(window.start)}}},
        {"range": {"timestamp": {"gte": _iso(window.end)}}},
        {"bool": {"must_not": {"terms": {"timestamp": grid_ms}}}},
    ]
    cells, _, _ = _duplicate_cells(window, rules)
    if len(cells):
        names = sorted({str(name) for name in window.names[cells % max(1, len(window.names))]})
        suspects.append({"terms": {"name": names}})
    return {"bool": {"filter": [arrivals_query(after, until)], "should": suspects, "minimum_should_match": 1}}


@dataclass(frozen=True)
class Arrivals:
    """Documents as the cleaning reads them (doc values, with ids) and as the collector sent them."""

    batch: DocumentBatch
    sent: list[dict[str, Any]]

    def of_shard(self, shard: Shard) -> Arrivals:
        """Only the documents of one name shard (``data.shards``: those without a name are shard 0's)."""
        if not shard.sharded:
            return self
        owned = shard.owns(self.batch.name)
        return Arrivals(self.batch.take(owned), [sent for sent, keep in zip(self.sent, owned, strict=True) if keep])


def read_suspects(client: Elasticsearch, index: str, query: Mapping[str, Any]) -> Arrivals:
    batches, sent = [], []
    for page in scan_pages(client, index, query, source=SENT_FIELDS, with_ids=True, docvalue_fields=DOC_VALUE_FIELDS):
        batches.append(from_doc_values([hit.get("fields", {}) for hit in page], [hit["_id"] for hit in page]))
        sent.extend(hit.get("_source", {}) for hit in page)
    return Arrivals(DocumentBatch.concat(batches, with_ids=True), sent)


def classify(batch: DocumentBatch, window: RollingWindow, rules: CleaningRules) -> tuple[np.ndarray, np.ndarray]:
    """Each document's reason (``None`` when it is good) and, for duplicates, whether it is the one kept."""
    reasons = np.full(len(batch), None, dtype=object)
    kept = np.zeros(len(batch), bool)

    def mark(condition: np.ndarray, reason: str) -> None:
        reasons[(reasons == None) & condition] = reason  # noqa: E711 (element-wise)

    has_time = batch.timestamp != NAT
    slot = np.where(has_time, batch.timestamp // STEP_NS, 0)
    mark(batch.name == None, "without_name")  # noqa: E711 (element-wise)
    mark(~has_time, "without_timestamp")
    mark(has_time & (slot < window.start_slot), "too_late")
    mark(has_time & (slot >= window.end_slot), "future_timestamp")
    mark(np.isnan(batch.value), "non_numeric")
    mark(~in_range(batch.value, rules), "out_of_range")
    mark(batch.timestamp % STEP_NS != 0, "off_grid")
    cells, kept_ingested, kept_value = _duplicate_cells(window, rules)
    candidates = np.flatnonzero(reasons == None)  # noqa: E711 (element-wise)
    if len(cells) and len(candidates):
        n = max(1, len(window.names))
        column = pd.Index(window.names).get_indexer(batch.name[candidates])
        cell = (slot[candidates] - window.start_slot) * n + column
        position = np.clip(np.searchsorted(cells, cell), 0, len(cells) - 1)
        duplicate = (column >= 0) & (cells[position] == cell)
        reasons[candidates[duplicate]] = "duplicate"
        winner = duplicate & (kept_ingested[position] == batch.ingested[candidates])
        winner &= kept_value[position] == batch.value[candidates]
        _, first = np.unique(cell[winner], return_index=True)  # identical twins: one of them is the kept one
        kept[candidates[np.flatnonzero(winner)[first]]] = True
    return reasons, kept


def _iso_ns(ns: int) -> str | None:
    return None if ns == NAT else pd.Timestamp(ns, tz="UTC").isoformat()


def _detail(reason: str, sent: Mapping[str, Any], ts: int, value: float, kept: bool, rules: CleaningRules) -> str:
    if reason == "without_name":
        return "no name, or an empty one: the collector must send the entity's name"
    if reason == "without_timestamp":
        return f"timestamp missing or not a date ({sent.get('timestamp')!r})"
    if reason == "too_late":
        return f"timestamp {_iso_ns(ts)} is older than the 24 h window when it arrived: never used"
    if reason == "future_timestamp":
        return f"timestamp {_iso_ns(ts)} is after the tick's end: check the collector's clock"
    if reason == "non_numeric":
        return f"value {sent.get('value')!r} is not a number"
    if reason == "out_of_range":
        return f"value {value:g} is outside [{rules.value_min:g}, {rules.value_max:g}]"
    if reason == "off_grid":
        return f"timestamp {_iso_ns(ts)} floored to {_iso_ns(ts // STEP_NS * STEP_NS)}"
    return (
        "several documents for this name and slot; this one is kept (latest arrival, then larger value)"
        if kept
        else "several documents for this name and slot; a later arrival (or a larger value) is kept instead"
    )


def entries(
    arrivals: Arrivals,
    window: RollingWindow,
    rules: CleaningRules,
    metrics_index: str,
    partition_key: str,
) -> list[tuple[str, dict[str, Any]]]:
    """The quarantine documents of ``arrivals``: one per bad document, its id derived from the document's."""
    batch = arrivals.batch
    reasons, kept = classify(batch, window, rules)
    assert batch.ids is not None
    result = []
    for i in np.flatnonzero(reasons != None):  # noqa: E711 (element-wise)
        sent = arrivals.sent[i]
        document_id = str(batch.ids[i])
        result.append(
            (
                deterministic_id(metrics_index, document_id),
                {
                    "document_id": document_id,
                    "metrics_index": metrics_index,
                    "reason": str(reasons[i]),
                    "detail": _detail(str(reasons[i]), sent, int(batch.timestamp[i]), batch.value[i], kept[i], rules),
                    "kept": bool(kept[i]) if reasons[i] == "duplicate" else None,
                    "name": batch.name[i],
                    "timestamp": _iso_ns(int(batch.timestamp[i])),
                    "ingested_at": _iso_ns(int(batch.ingested[i])),
                    "sent": json.dumps({key: sent.get(key) for key in SENT_FIELDS}, default=str)[:2000],
                    "partition_key": partition_key,
                },
            )
        )
    return result


def count_by_reason(quarantined: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    counts = dict.fromkeys(REASONS, 0)
    for _, entry in quarantined:
        counts[entry["reason"]] += 1
    return counts
