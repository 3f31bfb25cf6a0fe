"""Benchmark data: simulator names x days loaded once into the real Elasticsearch, then reused.

A small marker document in ``<prefix>-benchmeta`` records what was loaded; a later run with the same
spec finds it and skips the load (the simulator's ids are deterministic, so a reload would only
rewrite the same documents).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch, NotFoundError

from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.elastic.indices import IndexNames, ensure_indices


@dataclass(frozen=True)
class Dataset:
    prefix: str
    n_names: int
    days: float
    end: pd.Timestamp
    seed: int = 7

    @property
    def indices(self) -> IndexNames:
        return IndexNames(self.prefix)

    @property
    def marker(self) -> dict[str, object]:
        return {"n_names": self.n_names, "days": self.days, "end": self.end.isoformat(), "seed": self.seed}

    @property
    def meta_index(self) -> str:
        return f"{self.prefix}-benchmeta"


def is_loaded(client: Elasticsearch, dataset: Dataset) -> bool:
    try:
        found = client.get(index=dataset.meta_index, id="dataset")["_source"]
    except NotFoundError:
        return False
    return all(found.get(key) == value for key, value in dataset.marker.items()) and bool(found.get("documents"))


def ensure_loaded(client: Elasticsearch, dataset: Dataset, log: bool = True) -> int:
    """Load the dataset unless its marker says it is there; returns the number of metric documents."""
    if is_loaded(client, dataset):
        return int(client.get(index=dataset.meta_index, id="dataset")["_source"]["documents"])
    metrics = dataset.indices.metrics
    # Another spec (or a partial load) under this prefix: start from empty indices.
    client.indices.delete(index=f"{dataset.prefix}-*", allow_no_indices=True, expand_wildcards="all")
    ensure_indices(client, dataset.indices)
    spec = SimulationSpec(n_names=dataset.n_names, days=dataset.days, end=dataset.end, seed=dataset.seed)
    started = time.perf_counter()
    if log:
        print(f"loading {dataset.n_names} names x {dataset.days:g} days into {metrics} ...", flush=True)
    # Bulk loading only: no refresh and no fsync per request while loading, restored afterwards.
    client.indices.put_settings(index=metrics, settings={"refresh_interval": "-1", "translog.durability": "async"})
    try:
        written = bulk_write(client, metrics, simulate(spec).documents(), chunk_size=5_000, refresh=False)
    finally:
        client.indices.put_settings(
            index=metrics, settings={"refresh_interval": "1s", "translog.durability": "request"}
        )
    client.indices.refresh(index=metrics)
    client.index(index=dataset.meta_index, id="dataset", document={**dataset.marker, "documents": written})
    client.indices.refresh(index=dataset.meta_index)
    if log:
        print(f"loaded {written} documents in {time.perf_counter() - started:.0f} s", flush=True)
    return written


def reset_outputs(client: Elasticsearch, dataset: Dataset) -> None:
    """Fresh forecast and anomaly indices (current mappings), as a deployment starts with."""
    for index in (dataset.indices.forecasts, dataset.indices.anomalies):
        client.indices.delete(index=index, allow_no_indices=True, ignore_unavailable=True)
    ensure_indices(client, dataset.indices)


def prime_forecasts(client: Elasticsearch, dataset: Dataset, first_end: pd.Timestamp, last_end: pd.Timestamp) -> int:
    """The t+5 min forecasts the anomaly step reads, for every name and slot in ``[first_end, last_end)``.

    In a running deployment earlier ticks wrote them; here they are written directly (value = a
    constant: the read's cost does not depend on it), under the ids the ticks themselves use.
    """
    from tauxcharge_assets.data.simulator import _names
    from tauxcharge_assets.model.forecast_documents import forecast_documents

    names = _names(dataset.n_names)["name"].to_numpy()
    slots = pd.date_range(first_end, last_end, freq="5min", inclusive="left")
    frame = pd.DataFrame(
        {
            "name": np.tile(names, len(slots)),
            "issued_at": np.repeat(slots, len(names)),
            "horizon_steps": np.int16(1),
            "value": 50.0,
            "lower": 45.0,
            "upper": 55.0,
            "model_name": "tauxcharge-load-lstm",
            "model_version": "primed",
            "method": "lstm",
        }
    )
    frame["target_timestamp"] = frame["issued_at"]
    frame["partition_key"] = (frame["issued_at"] - pd.Timedelta(minutes=5)).dt.strftime("%Y-%m-%d-%H:%M")
    return bulk_write(client, dataset.indices.forecasts, forecast_documents(frame), chunk_size=5_000)


def main() -> None:
    import argparse

    from tauxcharge_assets.elastic.client import connect

    parser = argparse.ArgumentParser(description="Load benchmark data into Elasticsearch.")
    parser.add_argument("--url", default="http://127.0.0.1:9270")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--names", type=int, required=True)
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--end", default="2026-11-23T00:00Z")
    args = parser.parse_args()
    client = connect(args.url, request_timeout_s=600)
    ensure_loaded(client, Dataset(args.prefix, args.names, args.days, pd.Timestamp(args.end)))


if __name__ == "__main__":
    main()
