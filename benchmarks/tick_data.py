"""Benchmark data: simulator names x days loaded once into the real Elasticsearch, then reused.

A small marker document in ``<prefix>-benchmeta`` records what was loaded; a later run with the same
spec finds it and skips the load (the simulator's ids are deterministic, so a reload would only
rewrite the same documents).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from elasticsearch import Elasticsearch, NotFoundError

from tauxcharge_assets.es_store import IndexNames, bulk_write, ensure_indices
from tauxcharge_assets.simulator import SimulationSpec, simulate


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
    ensure_indices(client, dataset.indices)
    if is_loaded(client, dataset):
        return int(client.get(index=dataset.meta_index, id="dataset")["_source"]["documents"])
    metrics = dataset.indices.metrics
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


def main() -> None:
    import argparse

    from tauxcharge_assets.es_store import connect

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
