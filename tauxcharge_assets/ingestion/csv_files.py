"""``ingest csv``: CSV files to metric documents, in chunks (memory stays bounded by ``chunk_size`` rows).

Every file's header is checked against the mapping before anything is written, so a wrong column name
fails at once, naming the columns the file has. Each chunk is stamped with its own ``ingested_at`` just
before it is sent: a document becomes searchable within seconds of its arrival time, which is what the
incremental reads of the ticks rely on (``window/incremental.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.bulk import bulk_create
from tauxcharge_assets.ingestion.records import (
    FieldMapping,
    IngestInputError,
    IngestResult,
    now_utc,
    to_documents,
)

HEADER_LINES = 1  # line numbers in the bad-row report count the header as line 1


def _parser_problem(path: Path, error: Exception) -> IngestInputError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return IngestInputError(
        f"{path}: {message}; fix the file and run again (rows already written are not written twice)."
    )


def _chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The file's rows as text (the mapping decides what a column means, and a dimension keeps "007" as
    written); blank lines are kept as rows (reported as missing a timestamp), so line numbers stay true.
    A parser error names the file."""
    try:
        with pd.read_csv(
            path, dtype=str, keep_default_na=False, skip_blank_lines=False, chunksize=chunk_size
        ) as reader:
            chunks = iter(reader)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                yield chunk
    except (ValueError, OSError) as error:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise _parser_problem(path, error) from error


def check_header(path: Path, mapping: FieldMapping) -> list[str]:
    """The file's dimension columns; a missing file, a missing column or an unreadable header raises."""
    if not path.is_file():
        raise IngestInputError(f"{path}: no such file.")
    try:
        columns = [str(column) for column in pd.read_csv(path, dtype=str, nrows=0).columns]
    except (ValueError, OSError) as error:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise _parser_problem(path, error) from error
    return mapping.dimension_columns(columns, str(path))


def count_rows(path: Path) -> int:
    """Data rows, for the progress bar's ETA: newlines less the header (about 1 s per GB)."""
    lines, last = 0, b"\n"
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(0, lines + (last != b"\n") - HEADER_LINES)


def ingest_file(
    client: Elasticsearch,
    index: str,
    path: Path,
    mapping: FieldMapping,
    chunk_size: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Create the file's documents in ``index`` (already present ones are kept as they are)."""
    dimensions = check_header(path, mapping)
    result = IngestResult(source=str(path))
    for chunk in _chunks(path, chunk_size):
        numbers = chunk.index.to_numpy() + HEADER_LINES + 1  # pandas numbers rows 0, 1, ... across chunks
        converted = to_documents(chunk, mapping, dimensions, now_utc(), numbers)
        created, present = bulk_create(client, index, converted.documents, refresh=False)
        result.add(converted, created, present, len(chunk))
        if progress is not None:
            progress(len(chunk))
    if result.rows and not result.created + result.already_present and result.bad.total == result.rows:
        raise IngestInputError(
            f"{path}: none of its {result.rows:,} rows could be used ({result.bad.summary()}); check the "
            "column mapping and --timestamp-format."
        )
    return result
