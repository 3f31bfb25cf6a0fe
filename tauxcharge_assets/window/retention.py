"""The retention rule for files kept per partition or per window end (tick state, IO manager outputs).

Keep the ``keep_latest`` files whose names sort last (names are partition keys or window ends, so
these are the live chain) and the ``keep_written`` most recently written ones (a running backfill's
chain); everything else may go. Without it, the tick outputs alone grow by over 15 GB a day at
10,000 names. Files written less than ``keep_recent_s`` ago are kept too: with concurrent writers (a
backfill beside the live ticks), the other writers' new files would otherwise push out a file that a
running run has just written and is about to read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path


def outside_retention(
    files: Iterable[Path], keep_latest: int, keep_written: int, keep_recent_s: float = 0.0
) -> list[Path]:
    """The files the rule does not keep, in name order."""
    ordered = sorted(files)
    keep = set(ordered[-keep_latest:]) if keep_latest > 0 else set()
    if keep_written > 0:
        keep |= set(sorted(ordered, key=modified_time)[-keep_written:])
    if keep_recent_s > 0:
        now = time.time()
        keep |= {path for path in ordered if now - modified_time(path) < keep_recent_s}
    return [path for path in ordered if path not in keep]


def modified_time(path: Path) -> float:
    """Modification time; a file another process just deleted counts as oldest."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
