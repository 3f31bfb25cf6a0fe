"""Rows from any source (CSV chunks, JSON items) to metric documents, with every unusable row counted.

A row becomes ``{timestamp, name, value, ingested_at, <dimensions>}``: ``timestamp`` in ISO 8601 UTC,
``ingested_at`` the time of this ingestion (what the as-of reads filter on), and every other mapped
column a dimension, as text (the metrics template maps strings as keywords; a number in one row and
a word in the next would otherwise be refused by the field's first mapping).

Idempotence rule: a document's id is ``(name, timestamp, value)``, written with ``create`` (never
overwritten). So
- re-ingesting the same file or the same payload writes nothing: each document keeps its first
  ``ingested_at``, and the as-of reads of past partitions see exactly what they saw before;
- a corrected value for a (name, timestamp) already ingested is a new document that arrives now: the
  cleaning keeps the latest arrival, so reads as of now use the correction, reads as of a past
  partition still use what had arrived by then (a backfill still equals the live run);
- dimensions are not part of the id: a row re-sent with other dimensions only is already present.
The id is built from the parsed timestamp and number, so ``2026-01-05 00:00`` and
``2026-01-05T01:00:00+01:00``, or ``50`` and ``50.0``, are the same document.

Unusable rows (no timestamp or one that does not parse, no name, no value) are not written, and are
counted by reason with their line (CSV) or item (JSON) numbers. A value that is present but not a
number is written as sent: the cleaning counts it as ``non_numeric`` and the quarantine lists it,
as for any other source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from tauxcharge_assets.elastic.bulk import deterministic_id

METRIC_FIELDS = ("timestamp", "name", "value", "ingested_at")
UNIX_FORMATS = {"unix": "s", "unix_ms": "ms"}
SHOWN_LINES = 10  # line numbers shown per reason in a summary; the count is always complete


class IngestInputError(ValueError):
    """The input or its mapping is wrong (a missing column, a file that is not CSV, a payload that is not
    JSON...): the command line reports it in one line with exit code 2."""


@dataclass(frozen=True)
class FieldMapping:
    """Which column holds what. ``fixed_name`` replaces the name column (one series per file or
    endpoint); ``dimensions`` None means every other column."""

    timestamp: str = "timestamp"
    name: str = "name"
    value: str = "value"
    fixed_name: str | None = None
    timestamp_format: str | None = None  # None: ISO 8601; "unix", "unix_ms"; or a strptime format
    dimensions: tuple[str, ...] | None = None

    def mapped(self) -> list[str]:
        return [self.timestamp, *([] if self.fixed_name is not None else [self.name]), self.value]

    def dimension_columns(self, columns: Sequence[str], source: str, noun: str = "column") -> list[str]:
        """The dimension columns of ``columns``; a missing or colliding one raises ``IngestInputError``."""
        found = ", ".join(map(str, columns)) or "none"
        wanted = [*self.mapped(), *(self.dimensions or ())]
        missing = [column for column in wanted if column not in columns]
        if missing:
            roles = {self.timestamp: "timestamp", self.name: "name", self.value: "value"}
            options = sorted({f"--{roles[c]}-{noun}" if c in roles else "--dimensions" for c in missing})
            raise IngestInputError(
                f"{source}: no {noun} {', '.join(map(repr, missing))}; its {noun}s are: {found}. "
                f"Name yours with {', '.join(options)}."
            )
        mapped = set(self.mapped())
        chosen = list(self.dimensions) if self.dimensions is not None else [c for c in columns if c not in mapped]
        colliding = [column for column in chosen if column in METRIC_FIELDS and column not in mapped]
        if colliding:
            raise IngestInputError(
                f"{source}: the {noun} {colliding[0]!r} would overwrite the metric field of that name; map it "
                f"(--{colliding[0].replace('_', '-')}-{noun}) or list the dimensions to keep with --dimensions."
            )
        return chosen


@dataclass
class BadRows:
    """Rows not written, by reason, with the first ``SHOWN_LINES`` line numbers of each."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, line_numbers: Iterable[int]) -> None:
        numbers = list(line_numbers)
        if not numbers:
            return
        self.counts[reason] = self.counts.get(reason, 0) + len(numbers)
        shown = self.lines.setdefault(reason, [])
        shown.extend(numbers[: max(0, SHOWN_LINES - len(shown))])

    def merge(self, other: BadRows) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            shown = self.lines.setdefault(reason, [])
            shown.extend(other.lines.get(reason, [])[: max(0, SHOWN_LINES - len(shown))])

    def summary(self, unit: str = "line") -> str:
        """``unparseable timestamp: 2 (lines 4, 9); missing name: 1 (line 7)``."""
        parts = []
        for reason, count in self.counts.items():
            shown = self.lines.get(reason, [])
            more = ", ..." if count > len(shown) else ""
            label = unit if len(shown) == 1 and not more else f"{unit}s"
            parts.append(f"{reason}: {count} ({label} {', '.join(map(str, shown))}{more})")
        return "; ".join(parts)


@dataclass
class Converted:
    """One batch of rows: the documents to create, what was refused, non-numeric values written."""

    documents: list[tuple[str, dict[str, Any]]]
    bad: BadRows
    non_numeric: int


def _present(values: pd.Series) -> np.ndarray:
    """Not null and not blank."""
    text = values.astype("string").str.strip()
    return (values.notna() & text.notna() & (text != "")).to_numpy(dtype=bool)


def parse_timestamps(values: pd.Series, timestamp_format: str | None) -> pd.Series:
    """UTC timestamps, NaT where a value does not parse; a time without an offset is taken as UTC."""
    if timestamp_format in UNIX_FORMATS:
        numbers = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(numbers, unit=UNIX_FORMATS[timestamp_format], utc=True, errors="coerce")
    text = values.astype("string").str.strip()
    return pd.to_datetime(text, utc=True, errors="coerce", format=timestamp_format or "ISO8601")


def iso_utc(stamps: pd.Series) -> np.ndarray:
    """``2026-01-05T00:00:00Z``, or with milliseconds when there are some: one spelling per instant (the
    id is built from it), whatever the chunk or the source."""
    raw = stamps.to_numpy(dtype="datetime64[ns]")
    seconds = np.datetime_as_string(raw.astype("datetime64[s]"), unit="s", timezone="UTC")
    millis = np.datetime_as_string(raw.astype("datetime64[ms]"), unit="ms", timezone="UTC")
    whole = raw.astype("datetime64[s]") == raw.astype("datetime64[ms]")
    return np.where(whole, seconds, millis)


def dimension_text(value: Any) -> str | None:
    """A dimension as a keyword: text as given (stripped), JSON for anything else; None when absent."""
    if value is None or (not isinstance(value, list | dict | tuple) and pd.isna(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def metric_id(name: str, timestamp: str, value: float | str) -> str:
    """The document's id: ``(name, timestamp, value)`` (see the module docstring)."""
    return deterministic_id("metric", name, timestamp, repr(value) if isinstance(value, float) else value)


def to_documents(
    rows: pd.DataFrame,
    mapping: FieldMapping,
    dimensions: Sequence[str],
    ingested_at: pd.Timestamp,
    numbers: Sequence[int],
) -> Converted:
    """The documents of ``rows`` (``numbers``: each row's line or item number, for the bad-row report)."""
    numbers = np.asarray(numbers)
    bad = BadRows()
    stamps = parse_timestamps(rows[mapping.timestamp], mapping.timestamp_format)
    has_stamp = stamps.notna().to_numpy()
    if mapping.fixed_name is not None:
        names = np.full(len(rows), mapping.fixed_name, dtype=object)
        has_name = np.ones(len(rows), dtype=bool)
    else:
        names = rows[mapping.name].astype("string").str.strip().to_numpy(dtype=object)
        has_name = _present(rows[mapping.name])
    has_value = _present(rows[mapping.value])
    timestamp_present = _present(rows[mapping.timestamp])
    bad.add("missing timestamp", numbers[~timestamp_present])
    bad.add("unparseable timestamp", numbers[timestamp_present & ~has_stamp])
    bad.add("missing name", numbers[has_stamp & ~has_name])
    bad.add("missing value", numbers[has_stamp & has_name & ~has_value])
    usable = has_stamp & has_name & has_value

    numeric = pd.to_numeric(rows[mapping.value].astype("string").str.strip(), errors="coerce")
    numeric = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(numeric)
    raw_values = rows[mapping.value].to_numpy(dtype=object)
    iso = iso_utc(stamps)
    stamp_of = ingested_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ingested_at.microsecond // 1000:03d}Z"
    dimension_values = [rows[column].to_numpy(dtype=object) for column in dimensions]
    documents: list[tuple[str, dict[str, Any]]] = []
    non_numeric = 0
    for i in np.flatnonzero(usable):
        value: float | str
        if finite[i]:
            value = float(numeric[i])
        else:
            value = str(raw_values[i]).strip()
            non_numeric += 1
        name = str(names[i])
        document: dict[str, Any] = {"timestamp": str(iso[i]), "name": name, "value": value, "ingested_at": stamp_of}
        for column, values in zip(dimensions, dimension_values, strict=True):
            text = dimension_text(values[i])
            if text is not None:
                document[column] = text
        documents.append((metric_id(name, document["timestamp"], value), document))
    return Converted(documents, bad, non_numeric)


@dataclass
class IngestResult:
    """What one file or one pull did, for its summary line."""

    source: str
    rows: int = 0
    created: int = 0
    already_present: int = 0
    non_numeric: int = 0
    bad: BadRows = field(default_factory=BadRows)
    unit: str = "line"  # what the bad-row numbers count: CSV lines, JSON items

    def add(self, converted: Converted, created: int, already_present: int, rows: int) -> None:
        self.rows += rows
        self.created += created
        self.already_present += already_present
        self.non_numeric += converted.non_numeric
        self.bad.merge(converted.bad)

    def summary(self) -> str:
        line = (
            f"{self.source}: {self.rows:,} rows, {self.created:,} new documents, "
            f"{self.already_present:,} already present"
        )
        if self.non_numeric:
            line += f", {self.non_numeric:,} non-numeric values written as sent (the cleaning counts them)"
        if self.bad.total:
            line += f"; {self.bad.total:,} rows not written: {self.bad.summary(self.unit)}"
        return line


def now_utc() -> pd.Timestamp:
    """The arrival time stamped on a batch: milliseconds, as Elasticsearch keeps dates."""
    return pd.Timestamp.now(tz="UTC").floor("ms")
