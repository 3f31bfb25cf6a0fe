"""Reading a labelled ``timestamp,value`` CSV as it comes, and saying what was odd about its rows.

Real files are not a clean 5-minute grid: a local clock goes back an hour when daylight saving ends
(an hour of timestamps repeats), a collector restarts and stamps rows from a slightly earlier time,
rows go missing, and other sources sample every minute or every 10 minutes. None of this is a reason
to refuse a file, and sorting it would be wrong: the rows are scored causally, in the order they were
recorded, and the results must line up with the input row for row.

So the reader keeps the rows in file order and the detector scores them that way, one row per step:
a repeated timestamp is one more observation, a gap is simply the next row, and a file sampled every
N minutes is scored per row (its rows are the steps). Where the model wants a time of day (the
LSTM's calendar features) it uses the first timestamp plus the row's position on the 5-minute grid,
as it always has. What the reader had to accept is counted in an ``InputReport``, whose ``summary``
is the one line the ``detect`` command prints for each file that needed it.

Only what cannot be read is refused, with one line naming the file: a missing column, no rows, an
unreadable timestamp, a non-numeric value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tauxcharge_assets.settings import STEP_MINUTES

GAP_FACTOR = 1.5  # a step longer than this many typical intervals is a gap
DETECTOR_STEP = pd.Timedelta(minutes=STEP_MINUTES)
ONE_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class InputReport:
    """What one file's rows look like, counted so the command can say what it handled.

    ``typical_step`` is the median positive step between consecutive rows (None when no two rows
    differ). A step back is measured as how far the clock was set back: the previous stamp plus the
    typical step, minus the stamp (an hour for a daylight-saving fall-back sampled every 5 minutes).
    A gap is measured as the time between the two rows around it. Off-grid rows are those not a
    whole number of typical steps after the first stamp.
    """

    name: str
    rows: int
    typical_step: pd.Timedelta | None
    repeated_timestamps: int
    steps_back: int
    largest_step_back: pd.Timedelta | None
    gaps: int
    longest_gap: pd.Timedelta | None
    off_grid_rows: int
    hour_shift: bool  # some clock change was exactly one hour: probably daylight saving

    @property
    def needed_handling(self) -> bool:
        """True when the rows are not a plain ascending grid at the detector's own step."""
        return bool(
            self.repeated_timestamps
            or self.steps_back
            or self.gaps
            or self.off_grid_rows
            or (self.rows > 1 and self.typical_step != DETECTOR_STEP)
        )

    def summary(self) -> str:
        """One line in plain words, e.g. ``x.csv: 4032 rows, sampled every 5 min; 1 gap of 2 h``."""
        rows = f"{self.rows} row{'s' if self.rows != 1 else ''}"
        if self.typical_step is None:
            sampling = "sampling unknown (no two timestamps differ)" if self.rows > 1 else "sampling unknown"
        else:
            sampling = f"sampled every {plain_duration(self.typical_step)}"
            if self.typical_step != DETECTOR_STEP:
                sampling += " (scored one row per step)"
        parts = [f"{self.name}: {rows}, {sampling}"]
        order: list[str] = []
        if self.repeated_timestamps:
            order.append(plural(self.repeated_timestamps, "repeated timestamp"))
        if self.steps_back:
            size = plain_duration(self.largest_step_back) if self.largest_step_back is not None else "?"
            order.append(
                f"1 step back of {size}" if self.steps_back == 1 else f"{self.steps_back} steps back, largest {size}"
            )
        if order:
            hint = " (daylight saving?)" if self.hour_shift else ""
            parts.append(f"{' and '.join(order)}{hint} scored in file order")
        if self.gaps and self.longest_gap is not None:
            longest = plain_duration(self.longest_gap)
            hint = " (daylight saving?)" if self.hour_shift and not order else ""  # said once
            parts.append(
                f"1 gap of {longest}{hint}" if self.gaps == 1 else f"{self.gaps} gaps, longest {longest}{hint}"
            )
        if self.off_grid_rows and self.typical_step is not None:
            parts.append(
                f"{plural(self.off_grid_rows, 'row')} off the grid (every {plain_duration(self.typical_step)} "
                "from the first timestamp)"
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class LabelledInput:
    """A file's rows in file order: ``frame`` keeps the timestamp strings as given and float values;
    ``stamps`` are the same timestamps parsed to UTC (for loaders that want times, not strings)."""

    frame: pd.DataFrame
    stamps: pd.Series
    report: InputReport


def read_labelled_csv(path: Path) -> LabelledInput:
    """Read ``timestamp,value`` rows without reordering them; refuse only what cannot be read."""
    path = Path(path)
    raw = pd.read_csv(path, dtype={"timestamp": str})
    missing = {"timestamp", "value"} - set(raw.columns)
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {sorted(missing)}; expected the columns timestamp,value, "
            f"found {list(raw.columns)}."
        )
    if raw.empty:
        raise ValueError(f"{path}: no rows; detect needs at least one timestamp,value row.")
    stamps = parse_timestamps(raw["timestamp"])
    if stamps.isna().any():
        bad = raw.loc[stamps.isna(), "timestamp"].head(3).tolist()
        raise ValueError(f"{path}: {int(stamps.isna().sum())} unreadable timestamp(s), e.g. {bad}; use ISO 8601.")
    values = pd.to_numeric(raw["value"], errors="coerce")
    if values.isna().any():
        bad = raw.loc[values.isna(), "value"].head(3).tolist()
        raise ValueError(
            f"{path}: {int(values.isna().sum())} non-numeric value(s), e.g. {bad}; fix or drop those rows."
        )
    frame = pd.DataFrame({"timestamp": raw["timestamp"], "value": values.astype(np.float64)})
    return LabelledInput(frame, stamps, describe_rows(path.name, stamps))


def parse_timestamps(raw: pd.Series) -> pd.Series:
    """UTC times (NaT where unreadable): ISO 8601 row by row, so offsets may change mid-file (+02:00 to
    +01:00 at a daylight-saving change); a column pandas can read otherwise (one inferred format) fills in."""
    stamps = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    if stamps.isna().any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": the NaT says it
            inferred = pd.to_datetime(raw, utc=True, errors="coerce")
        stamps = stamps.fillna(inferred)
    return stamps


def describe_rows(name: str, stamps: pd.Series) -> InputReport:
    """Count repeats, steps back, gaps and off-grid rows of timestamps taken in file order."""
    ns = pd.DatetimeIndex(stamps).as_unit("ns").asi8
    steps = np.diff(ns)
    positive = steps[steps > 0]
    typical = int(np.median(positive)) if positive.size else None
    back = steps < 0
    gaps = steps > GAP_FACTOR * typical if typical is not None else np.zeros_like(back)
    set_back = (typical or 0) - steps[back]  # how far the clock went back at each step back
    jumps = np.concatenate([set_back, steps[gaps] - (typical or 0)])
    off_grid = int(np.count_nonzero((ns - ns[0]) % typical)) if typical is not None else 0
    return InputReport(
        name=name,
        rows=len(ns),
        typical_step=pd.Timedelta(typical, unit="ns") if typical is not None else None,
        repeated_timestamps=int(pd.Series(ns).duplicated().sum()),
        steps_back=int(back.sum()),
        largest_step_back=pd.Timedelta(int(set_back.max()), unit="ns") if set_back.size else None,
        gaps=int(gaps.sum()),
        longest_gap=pd.Timedelta(int(steps[gaps].max()), unit="ns") if gaps.any() else None,
        off_grid_rows=off_grid,
        hour_shift=bool(np.any(jumps == ONE_HOUR.value)),
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def plain_duration(span: pd.Timedelta) -> str:
    """``1 h``, ``1 h 5 min``, ``2 days 3 h``, ``30 s``: the largest two units, as a person says it."""
    seconds = span.total_seconds()
    if seconds < 1:
        return f"{seconds:g} s"
    units = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    remainder = round(seconds)
    for unit, size in units:
        count, remainder = divmod(remainder, size)
        if count:
            parts.append(plural(count, unit) if unit == "day" else f"{count} {unit}")
    return " ".join(parts[:2])
