"""``simulate --live``: the simulator keeps writing current data, so the schedule, the sensor, the checks
and the dashboard can be watched working on a laptop.

One simulation is made at start, anchored on whole days so a restart on the same day makes the same
documents (same ids: nothing is written twice). Each round writes the documents that have *arrived*
since the previous round (``ingested_at`` in ``(previous round, now]``, the collectors' own delays and
late documents included) and whose timestamp is after ``since`` (by default the newest document
already in the index, so it continues the demo's data rather than rewriting it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.data.simulator import Simulation, SimulationSpec, simulate
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.settings import to_utc


def live_simulation(names: int, seed: int, started: pd.Timestamp, history_days: int, days_ahead: int) -> Simulation:
    """From ``history_days`` before ``started``'s day to ``days_ahead`` days after it, anchored on UTC midnights."""
    end = to_utc(started).floor("D") + pd.Timedelta(days=days_ahead)
    return simulate(SimulationSpec(n_names=names, days=float(history_days + days_ahead), end=end, seed=seed))


class Arrivals:
    """The simulation's documents with their arrival and measure times parsed once, selectable by round."""

    def __init__(self, documents: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self.documents = list(documents)
        self.ingested = pd.to_datetime([d["ingested_at"] for _, d in self.documents], utc=True).asi8
        self.timestamp = pd.to_datetime([d["timestamp"] for _, d in self.documents], utc=True).asi8

    def between(
        self, after: pd.Timestamp, until: pd.Timestamp, since: pd.Timestamp
    ) -> list[tuple[str, dict[str, Any]]]:
        """The documents that arrived in ``(after, until]`` with a timestamp after ``since``."""
        chosen = (self.ingested > to_utc(after).value) & (self.ingested <= to_utc(until).value)
        chosen &= self.timestamp > to_utc(since).value
        return [self.documents[i] for i in np.flatnonzero(chosen)]


@dataclass(frozen=True)
class Round:
    until: pd.Timestamp
    written: int


def run_live(
    resource: ElasticsearchResource,
    simulation: Simulation,
    since: pd.Timestamp,
    interval_s: float = 300.0,
    rounds: int | None = None,
    clock: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[Round], None] = lambda _: None,
) -> list[Round]:
    """Write each round's arrivals, ``interval_s`` apart, ``rounds`` times (forever when None)."""
    client = resource.get_client()
    arrivals = Arrivals(simulation.documents())
    horizon = simulation.values.index[-1]
    after, done = pd.Timestamp(0, tz="UTC"), []
    while rounds is None or len(done) < rounds:
        until = clock()
        if until > horizon:
            break
        written = bulk_write(client, resource.indices.metrics, arrivals.between(after, until, since))
        done.append(Round(until, written))
        report(done[-1])
        after = until
        if rounds is None or len(done) < rounds:
            sleep(interval_s)
    return done
