"""Load simulator: realistic 5-minute load rates with labelled anomalies, deterministic for a seed.

Each name gets its own level and amplitudes, a daily and a weekly cycle, a trend and AR(1) noise.
The documents it writes carry the defects real collectors produce (missing points, duplicates,
late arrivals, unparseable and out-of-range values) so the cleaning rules are exercised on every
demo run, and the anomalies it injects are labelled so detection can be scored.

The defaults give the demo's series (percentages over the whole grid, the four ``ANOMALY_KINDS``),
and a given seed keeps giving the same values. Spec fields widen the set for detector development
(``benchmarks/detection_devset.py``): every kind of ``ALL_ANOMALY_KINDS``, anomaly-free names, names
shorter than the grid, smooth and noisy names, and request counts instead of percentages. The extra
choices come from a second generator, so the default draws are untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.settings import STEP_MINUTES, to_utc

ANOMALY_KINDS = ("spike", "level_shift", "flat_line", "drift")
# What an operator meets besides those: a drop of traffic, a noisy spell, the daily cycle moving by hours
# or flattening for a day or more, and a run of missing points (labelled at the first point after it,
# the first moment a detector can notice anything).
ALL_ANOMALY_KINDS = (
    *ANOMALY_KINDS,
    "dip",
    "variance_burst",
    "daily_phase_shift",
    "daily_collapse",
    "missing_burst",
)
NOISE_FACTORS = {"smooth": 0.25, "normal": 1.0, "noisy": 2.5}  # times the name's noise level
ENTITY_KINDS = ("server", "link", "cell")
SITES = ("par", "lyo", "mrs", "lil", "bdx")


@dataclass(frozen=True)
class SimulationSpec:
    n_names: int = 50
    days: float = 14.0
    end: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC").floor("D"))
    seed: int = 7
    missing_rate: float = 0.01
    duplicate_rate: float = 0.005
    late_rate: float = 0.005
    bad_value_rate: float = 0.0005
    anomalies_per_name: float = 0.6
    recent_anomalies: int = 0
    recent_window_steps: int = 12
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    anomaly_free_share: float = 0.0  # names that get no anomaly: false alarms are measured on them
    count_share: float = 0.0  # names of request counts (non-negative integers, overdispersed, unbounded)
    smooth_share: float = 0.0  # names with a quarter of the usual noise
    noisy_share: float = 0.0  # names with 2.5 times the usual noise
    min_rows: int | None = None  # each name's length log-uniform in [min_rows, steps]; None: the whole grid
    anomaly_after: float = 0.0  # share of each name's first rows kept anomaly-free (a detector's probation)

    def __post_init__(self) -> None:
        unknown = set(self.anomaly_kinds) - set(ALL_ANOMALY_KINDS)
        if unknown or not self.anomaly_kinds:
            raise ValueError(
                f"anomaly_kinds must be a non-empty subset of {ALL_ANOMALY_KINDS}, got {self.anomaly_kinds}."
            )
        shares = (self.anomaly_free_share, self.count_share, self.smooth_share, self.noisy_share, self.anomaly_after)
        if not all(0.0 <= share <= 1.0 for share in shares) or self.smooth_share + self.noisy_share > 1.0:
            raise ValueError(f"shares must lie in [0, 1] with smooth_share + noisy_share <= 1, got {shares}.")
        if self.min_rows is not None and not 1 <= self.min_rows <= self.steps:
            raise ValueError(f"min_rows must lie in [1, steps={self.steps}], got {self.min_rows}.")

    @property
    def steps(self) -> int:
        return round(self.days * 24 * 60 / STEP_MINUTES)


@dataclass(frozen=True)
class Simulation:
    spec: SimulationSpec
    values: pd.DataFrame  # grid index (UTC) x names, the true values, NaN where a point is missing
    labels: pd.DataFrame  # name, kind, start, end (inclusive timestamps of the anomaly)
    metadata: pd.DataFrame  # name, kind, site
    styles: pd.DataFrame = field(default_factory=pd.DataFrame)  # name, unit, noise, rows, anomaly_free

    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(id, document)`` pairs with deterministic ids: reloading the same simulation is idempotent."""
        yield from _documents(self)


def _names(n_names: int) -> pd.DataFrame:
    idx = np.arange(n_names)
    kinds = [ENTITY_KINDS[i % len(ENTITY_KINDS)] for i in idx]
    sites = [SITES[(i // len(ENTITY_KINDS)) % len(SITES)] for i in idx]
    names = [f"{kind}-{site}-{i:05d}" for i, kind, site in zip(idx, kinds, sites, strict=True)]
    return pd.DataFrame({"name": names, "kind": kinds, "site": sites})


@dataclass(frozen=True)
class _Shape:
    """What the kinds that change a name's pattern need: its daily cycle, weekend factor and noise level."""

    hours: np.ndarray  # (1, steps) hour of the day
    daily: np.ndarray  # (names, steps) the daily cycle around the level
    weekly: np.ndarray  # (names, steps) the weekend factor
    daily_amp: np.ndarray  # (names, 1)
    peak_hour: np.ndarray  # (names, 1)
    noise_sd: np.ndarray  # (names, 1)


def _styles(spec: SimulationSpec, names: pd.Series) -> pd.DataFrame:
    """Unit, noise style, length and anomaly-free flag of each name, from their own generator.

    Shares are exact (rounded) counts rather than coin flips, so a small set still holds every style.
    """
    rng = np.random.default_rng([spec.seed, 1])
    n, steps = len(names), spec.steps

    def chosen(share: float) -> np.ndarray:
        flags = np.zeros(n, dtype=bool)
        flags[rng.permutation(n)[: round(share * n)]] = True
        return flags

    order = rng.permutation(n)
    noise = np.full(n, "normal", dtype=object)
    n_smooth, n_noisy = round(spec.smooth_share * n), round(spec.noisy_share * n)
    noise[order[:n_smooth]] = "smooth"
    noise[order[n_smooth : n_smooth + n_noisy]] = "noisy"
    unit = np.where(chosen(spec.count_share), "count", "percent")
    free = chosen(spec.anomaly_free_share)
    rows = np.full(n, steps)
    if spec.min_rows is not None:
        drawn = np.exp(rng.uniform(np.log(spec.min_rows), np.log(steps), n))
        rows = np.clip(np.round(drawn).astype(int), spec.min_rows, steps)
    return pd.DataFrame({"name": names.to_numpy(), "unit": unit, "noise": noise, "rows": rows, "anomaly_free": free})


def simulate(spec: SimulationSpec) -> Simulation:
    rng = np.random.default_rng(spec.seed)
    meta = _names(spec.n_names)
    styles = _styles(spec, meta["name"])
    n, steps = spec.n_names, spec.steps
    end = to_utc(spec.end)
    index = pd.date_range(end=end - pd.Timedelta(minutes=STEP_MINUTES), periods=steps, freq=f"{STEP_MINUTES}min")
    hours = (index.hour + index.minute / 60.0).to_numpy()[None, :]
    dow = index.dayofweek.to_numpy()[None, :]
    days_elapsed = (np.arange(steps) / (24 * 60 / STEP_MINUTES))[None, :]

    level = rng.uniform(15, 55, (n, 1))
    daily_amp = rng.uniform(5, 25, (n, 1))
    peak_hour = rng.uniform(11, 17, (n, 1))
    weekend_drop = rng.uniform(0, 0.5, (n, 1))
    trend_per_day = rng.normal(0, 0.3, (n, 1))
    noise_sd = rng.uniform(0.8, 3.0, (n, 1)) * styles["noise"].map(NOISE_FACTORS).to_numpy(np.float64)[:, None]

    daily = daily_amp * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)
    weekly = np.where(dow >= 5, 1.0 - weekend_drop, 1.0)
    base = (level + daily) * weekly + trend_per_day * days_elapsed
    noise = np.empty((n, steps))
    shocks = rng.normal(0, 1, (n, steps)) * noise_sd
    noise[:, 0] = shocks[:, 0]
    for t in range(1, steps):  # AR(1) noise: real load is autocorrelated
        noise[:, t] = 0.6 * noise[:, t - 1] + shocks[:, t]
    values = base + noise
    shape = _Shape(hours, daily, weekly, daily_amp, peak_hour, noise_sd)

    first = steps - styles["rows"].to_numpy()  # a shorter name starts later on the grid
    eligible = np.flatnonzero(~styles["anomaly_free"].to_numpy(bool))
    labels: list[dict[str, Any]] = []
    n_anomalies = rng.poisson(spec.anomalies_per_name * len(eligible))
    for _ in range(n_anomalies):
        row = int(eligible[int(rng.integers(len(eligible)))])
        kind = spec.anomaly_kinds[int(rng.integers(len(spec.anomaly_kinds)))]
        low = int(first[row]) + max(288, int(spec.anomaly_after * (steps - first[row])))  # models need history
        start = int(rng.integers(low, max(low + 1, steps - 36)))
        labels.append(_inject(values, row, start, kind, rng, shape=shape))
    for i in range(spec.recent_anomalies if len(eligible) else 0):
        row = int(eligible[int(rng.choice(len(eligible)))])
        start = steps - spec.recent_window_steps + int(rng.integers(spec.recent_window_steps))
        labels.append(_inject(values, row, start, "spike", rng, length=1) | {"recent": i})
    percent = (styles["unit"] == "percent").to_numpy()
    values[percent] = np.clip(values[percent], 0.0, 100.0)
    if not percent.all():
        values[~percent] = _counts(values[~percent], np.random.default_rng([spec.seed, 2]))
        _collector_effects(values, labels, ~percent)
    missing = rng.random((n, steps)) < spec.missing_rate
    for lab in labels:
        if lab["kind"] == "missing_burst":
            missing[lab["row"], lab["gap"][0] : lab["gap"][1]] = True
            missing[lab["row"], lab["start"]] = False  # the first point after the gap: what a detector sees
    for row in np.flatnonzero(first > 0):
        missing[row, : first[row]] = True
    values[missing] = np.nan

    frame = pd.DataFrame(values.T.astype(np.float64), index=index, columns=meta["name"].to_list())
    label_frame = pd.DataFrame(
        [
            {
                "name": meta["name"].iloc[lab["row"]],
                "kind": lab["kind"],
                "start": index[lab["start"]],
                "end": index[min(lab["end"], steps - 1)],
            }
            for lab in labels
        ],
        columns=["name", "kind", "start", "end"],
    )
    return Simulation(spec=spec, values=frame, labels=label_frame, metadata=meta, styles=styles)


def _counts(latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Request counts whose mean follows the latent load: gamma-Poisson, so bursty beyond Poisson noise."""
    rows = latent.shape[0]
    per_unit = np.exp(rng.uniform(np.log(0.3), np.log(30.0), (rows, 1)))  # requests per unit of load
    shape = rng.uniform(4.0, 40.0, (rows, 1))  # gamma shape: the smaller, the burstier
    mean = np.clip(latent, 0.0, None) * per_unit * rng.gamma(shape, 1.0 / shape, latent.shape)
    return rng.poisson(mean).astype(np.float64)


def _collector_effects(values: np.ndarray, labels: list[dict[str, Any]], rows: np.ndarray) -> None:
    """Re-apply what the collector does to counts after sampling them.

    A stuck collector repeats its last count exactly, and a counter read after a gap reports every request
    of the gap at once (the first delta covers it all), so the point after a missing burst jumps.
    """
    for lab in labels:
        row = lab["row"]
        if not rows[row]:
            continue
        if lab["kind"] == "flat_line":
            values[row, lab["start"] : lab["end"] + 1] = values[row, lab["start"] - 1]
        elif lab["kind"] == "missing_burst":
            gap_start, gap_stop = lab["gap"]
            values[row, gap_stop] += values[row, gap_start:gap_stop].sum()


def _busy_from(shape: _Shape, row: int, start: int) -> int:
    """The first slot from ``start`` (within a day) where the daily cycle is above its mean: a dip there shows."""
    ahead = np.flatnonzero(shape.daily[row, start : start + 288] >= 0)
    return start + int(ahead[0]) if len(ahead) else start


def _inject(
    values: np.ndarray,
    row: int,
    start: int,
    kind: str,
    rng: np.random.Generator,
    length: int | None = None,
    shape: _Shape | None = None,
) -> dict[str, Any]:
    steps = values.shape[1]
    if kind == "spike":
        length = length or int(rng.integers(1, 4))
        stop = min(steps, start + length)
        direction = -1.0 if values[row, start] > 55 else 1.0  # room to move inside [0, 100]
        values[row, start:stop] += direction * rng.uniform(35, 55)
    elif kind == "level_shift":
        stop = min(steps, start + int(rng.integers(24, 144)))
        values[row, start:stop] += rng.choice([-1, 1]) * rng.uniform(15, 30)
    elif kind == "flat_line":
        stop = min(steps, start + int(rng.integers(12, 48)))
        values[row, start:stop] = values[row, start - 1]
    elif kind == "drift":
        stop = min(steps, start + int(rng.integers(24, 72)))
        values[row, start:stop] += np.linspace(0, rng.uniform(20, 35), stop - start)
    elif kind == "missing_burst":  # the gap is [start, stop); the label is its first point after
        stop = min(steps - 1, start + int(rng.integers(12, 145)))
        return {"row": row, "kind": kind, "start": stop, "end": stop, "gap": (start, stop)}
    elif shape is None:
        raise ValueError(f"anomaly kind {kind!r} needs the name's shape.")
    elif kind == "dip":  # traffic falls to a fraction of its level for 15 min to 2 h
        start = min(_busy_from(shape, row, start), steps - 1)
        stop = min(steps, start + int(rng.integers(3, 25)))
        values[row, start:stop] *= rng.uniform(0.0, 0.35)
    elif kind == "variance_burst":  # a noisy spell: 4 to 8 times the name's noise (at least 1) for 1 to 6 h
        stop = min(steps, start + int(rng.integers(12, 73)))
        spread = rng.uniform(4.0, 8.0) * max(float(shape.noise_sd[row, 0]), 1.0)
        values[row, start:stop] += rng.normal(0.0, spread, stop - start)
    elif kind == "daily_phase_shift":  # the day's peak moves by 4 to 10 h, for one to two days
        stop = min(steps, start + int(rng.integers(288, 577)))
        moved = rng.choice([-1, 1]) * rng.uniform(4.0, 10.0)
        span = slice(start, stop)
        shifted = shape.daily_amp[row, 0] * np.cos(
            2 * np.pi * (shape.hours[0, span] - shape.peak_hour[row, 0] - moved) / 24.0
        )
        values[row, span] += (shifted - shape.daily[row, span]) * shape.weekly[row, span]
    elif kind == "daily_collapse":  # the daily cycle flattens to at most a fifth, for one to two days
        stop = min(steps, start + int(rng.integers(288, 577)))
        span = slice(start, stop)
        values[row, span] -= (1.0 - rng.uniform(0.0, 0.2)) * shape.daily[row, span] * shape.weekly[row, span]
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ALL_ANOMALY_KINDS}.")
    return {"row": row, "kind": kind, "start": start, "end": stop - 1}


def _documents(sim: Simulation) -> Iterator[tuple[str, dict[str, Any]]]:
    from tauxcharge_assets.elastic.bulk import deterministic_id

    spec = sim.spec
    rng = np.random.default_rng(spec.seed + 1)
    meta = sim.metadata.set_index("name")
    stamps = sim.values.index.tz_convert(None).to_numpy()
    iso = np.datetime_as_string(stamps, unit="s", timezone="UTC")
    for name in sim.values.columns:
        column = sim.values[name].to_numpy()
        delays_ms = rng.uniform(5_000, 60_000, len(column))  # between the measure and its arrival
        late = rng.random(len(column)) < spec.late_rate
        delays_ms[late] = rng.uniform(10 * 60_000, 60 * 60_000, late.sum())
        arrived = stamps + delays_ms.astype("timedelta64[ms]")
        ingested = np.datetime_as_string(arrived, unit="ms", timezone="UTC")
        ingested_again = np.datetime_as_string(arrived + np.timedelta64(90, "s"), unit="ms", timezone="UTC")
        duplicated = rng.random(len(column)) < spec.duplicate_rate
        bad = rng.random(len(column)) < spec.bad_value_rate
        kind, site = meta.at[name, "kind"], meta.at[name, "site"]
        for t in np.flatnonzero(~np.isnan(column)):
            value: Any = round(float(column[t]), 3)
            if bad[t]:
                value = "n/a" if t % 2 else 250.0 + value
            document = {
                "timestamp": str(iso[t]),
                "name": name,
                "value": value,
                "ingested_at": str(ingested[t]),
                "kind": kind,
                "site": site,
            }
            yield deterministic_id("sim", name, iso[t], 0), document
            if duplicated[t]:
                yield (
                    deterministic_id("sim", name, iso[t], 1),
                    document | {"ingested_at": str(ingested_again[t])},
                )


def save_labels(sim: Simulation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "spec": {k: str(v) for k, v in asdict(sim.spec).items()},
        "anomalies": [
            {"name": r.name, "kind": r.kind, "start": r.start.isoformat(), "end": r.end.isoformat()}
            for r in sim.labels.itertuples()
        ],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def load_labels(path: Path) -> pd.DataFrame:
    anomalies = json.loads(path.read_text())["anomalies"]
    frame = pd.DataFrame(anomalies, columns=["name", "kind", "start", "end"])
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
