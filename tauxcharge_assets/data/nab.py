"""Loader for the Numenta Anomaly Benchmark's realAWSCloudwatch CSVs (one name per file).

The data stays where it is (``../shared/data/nab/realAWSCloudwatch``): it is read, never copied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from tauxcharge_assets.detection.input_rows import read_labelled_csv
from tauxcharge_assets.elastic.bulk import deterministic_id
from tauxcharge_assets.settings import REPO_ROOT

DEFAULT_NAB_DIR = REPO_ROOT.parent / "shared" / "data" / "nab" / "realAWSCloudwatch"


def read_series(path: Path) -> pd.DataFrame:
    """``timestamp,value`` with UTC timestamps, in file order: the ``detect`` command's reader
    (``input_rows.read_labelled_csv``), so both accept and refuse the same files."""
    read = read_labelled_csv(path)
    return pd.DataFrame({"timestamp": read.stamps, "value": read.frame["value"]})


def read_directory(directory: Path = DEFAULT_NAB_DIR) -> dict[str, pd.DataFrame]:
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"No CSV files in {directory}: pass the realAWSCloudwatch folder of the NAB data.")
    return {path.stem: read_series(path) for path in files}


def read_anomaly_windows(
    directory: Path = DEFAULT_NAB_DIR,
) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Labelled windows keyed by file stem (the JSON is keyed by ``realAWSCloudwatch/<file>.csv``)."""
    raw = json.loads((directory / "anomaly_windows.json").read_text())
    windows: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for key, pairs in raw.items():
        stem = Path(key).stem
        windows[stem] = [(pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC")) for a, b in pairs]
    return windows


def documents(
    series: dict[str, pd.DataFrame], shift: pd.Timedelta | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Metric documents, one name per file; ``shift`` moves old data next to the present if wanted."""
    for name, frame in series.items():
        stamps = frame["timestamp"] + (shift or pd.Timedelta(0))
        for stamp, value in zip(stamps, frame["value"], strict=True):
            iso = stamp.isoformat()
            yield deterministic_id("nab", name, iso), {"timestamp": iso, "name": name, "value": float(value)}
