"""Where each tick leaves its rolling window for the next one, with a retention rule.

One file per window end under ``<data folder>/rolling_window/<metrics index>/``, written atomically
(temporary file, then rename) so a concurrent backfill never reads half a file. The next tick looks
for the newest window that ends before its own end, at most ``max_gap`` earlier; anything else means
a cold read, which is always correct, only slower. Nothing here is needed for correctness: deleting
the folder costs one cold read.

Retention keeps the ``keep_latest`` windows with the latest ends (the live chain) and the
``keep_written`` most recently written ones (a backfill's chain), and deletes the rest.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tauxcharge_assets.settings import STEP_MINUTES, data_dir, to_utc
from tauxcharge_assets.window.retention import modified_time, outside_retention
from tauxcharge_assets.window.rolling import RollingWindow

FORMAT_VERSION = 2  # 2: OneStepForecasts gained ``start``; files of another format are ignored (a cold read)
_FILE_TIME_FORMAT = "%Y%m%dT%H%M"
_last_saved: dict[Path, Any] = {}  # the window this process saved last in each folder: no re-read


@dataclass(frozen=True)
class WindowStore:
    """Windows of one ``kind`` (any class with an ``end`` timestamp), one file per end."""

    root: Path
    keep_latest: int = 2
    keep_written: int = 2
    kind: type = RollingWindow

    @staticmethod
    def for_index(
        index: str, base: Path | None = None, kind: type = RollingWindow, folder: str = "rolling_window"
    ) -> WindowStore:
        return WindowStore((base or data_dir() / folder) / index, kind=kind)

    def path_for(self, end: pd.Timestamp) -> Path:
        return self.root / f"{to_utc(end).strftime(_FILE_TIME_FORMAT)}.pkl"

    def save(self, window: Any) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(window.end)
        with tempfile.NamedTemporaryFile("wb", dir=self.root, suffix=".tmp", delete=False) as handle:
            pickle.dump({"format": FORMAT_VERSION, "window": window}, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        for cached in [p for p in _last_saved if p.parent == self.root]:
            del _last_saved[cached]
        _last_saved[path] = window
        self.prune()
        return path

    def load(self, end: pd.Timestamp) -> Any | None:
        """The window ending exactly at ``end``, or None (missing, unreadable or another format)."""
        path = self.path_for(end)
        if path in _last_saved and path.exists():
            return _last_saved[path]
        try:
            with path.open("rb") as handle:
                stored = pickle.load(handle)
        except (FileNotFoundError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT_VERSION:
            return None
        window = stored["window"]
        return window if isinstance(window, self.kind) and window.end == to_utc(end) else None

    def latest_before(self, end: pd.Timestamp, max_gap: int = 12) -> Any | None:
        """The newest stored window ending in ``[end - max_gap steps, end)``."""
        step = pd.Timedelta(minutes=STEP_MINUTES)
        for back in range(1, max_gap + 1):
            window = self.load(to_utc(end) - back * step)
            if window is not None:
                return window
        return None

    def prune(self) -> list[Path]:
        """Apply the retention rule; returns the deleted files."""
        deleted = outside_retention(self.root.glob("*.pkl"), self.keep_latest, self.keep_written)
        for path in deleted:
            path.unlink(missing_ok=True)
            _last_saved.pop(path, None)
        for stale in self.root.glob("*.tmp"):  # a writer that died mid-file
            if time.time() - modified_time(stale) > 3600:
                stale.unlink(missing_ok=True)
        return deleted
