"""Load simulator: realistic 5-minute load rates with labelled anomalies, deterministic for a seed.

Each name gets its own level and amplitudes, a daily and a weekly cycle, a trend and AR(1) noise.
The documents it writes carry the defects real collectors produce (missing points, duplicates,
late arrivals, unparseable and out-of-range values) so the cleaning rules are exercised on every
demo run, and the anomalies it injects are labelled so detection can be scored.
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

    @property
    def steps(self) -> int:
        return round(self.days * 24 * 60 / STEP_MINUTES)


@dataclass(frozen=True)
class Simulation:
    spec: SimulationSpec
    values: pd.DataFrame  # grid index (UTC) x names, the true values, NaN where a point is missing
    labels: pd.DataFrame  # name, kind, start, end (inclusive timestamps of the anomaly)
    metadata: pd.DataFrame  # name, kind, site

    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(id, document)`` pairs with deterministic ids: reloading the same simulation is idempotent."""
        yield from _documents(self)


def _names(n_names: int) -> pd.DataFrame:
    idx = np.arange(n_names)
    kinds = [ENTITY_KINDS[i % len(ENTITY_KINDS)] for i in idx]
    sites = [SITES[(i // len(ENTITY_KINDS)) % len(SITES)] for i in idx]
    names = [f"{kind}-{site}-{i:05d}" for i, kind, site in zip(idx, kinds, sites, strict=True)]
    return pd.DataFrame({"name": names, "kind": kinds, "site": sites})


def simulate(spec: SimulationSpec) -> Simulation:
    rng = np.random.default_rng(spec.seed)
    meta = _names(spec.n_names)
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
    noise_sd = rng.uniform(0.8, 3.0, (n, 1))

    daily = daily_amp * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)
    weekly = np.where(dow >= 5, 1.0 - weekend_drop, 1.0)
    base = (level + daily) * weekly + trend_per_day * days_elapsed
    noise = np.empty((n, steps))
    shocks = rng.normal(0, 1, (n, steps)) * noise_sd
    noise[:, 0] = shocks[:, 0]
    for t in range(1, steps):  # AR(1) noise: real load is autocorrelated
        noise[:, t] = 0.6 * noise[:, t - 1] + shocks[:, t]
    values = base + noise

    labels: list[dict[str, Any]] = []
    n_anomalies = rng.poisson(spec.anomalies_per_name * n)
    for _ in range(n_anomalies):
        row = int(rng.integers(n))
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
        start = int(rng.integers(288, max(289, steps - 36)))  # not in the first day: models need history
        labels.append(_inject(values, row, start, kind, rng))
    for i in range(spec.recent_anomalies):
        row = int(rng.choice(n))
        start = steps - spec.recent_window_steps + int(rng.integers(spec.recent_window_steps))
        labels.append(_inject(values, row, start, "spike", rng, length=1) | {"recent": i})
    values = np.clip(values, 0.0, 100.0)
    values[rng.random((n, steps)) < spec.missing_rate] = np.nan

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
    return Simulation(spec=spec, values=frame, labels=label_frame, metadata=meta)


def _inject(
    values: np.ndarray, row: int, start: int, kind: str, rng: np.random.Generator, length: int | None = None
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
    else:  # drift
        stop = min(steps, start + int(rng.integers(24, 72)))
        values[row, start:stop] += np.linspace(0, rng.uniform(20, 35), stop - start)
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
