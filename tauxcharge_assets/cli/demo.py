"""The main job end to end: local Elasticsearch, simulator data, the asset graph, printed results.

Runs are recorded in the Dagster instance under the data folder, so ``dagster dev`` shows them
afterwards. The demo is anchored to a fixed end (midnight UTC by default): running it again the
same day rewrites the same documents under the same ids and adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tauxcharge_assets.cli.errors import EXIT_UNAVAILABLE, UserFacingError, latest_run_failure, quiet_run_failures
from tauxcharge_assets.cli.progress import Step
from tauxcharge_assets.cli.runner import (
    dagster_instance,
    ensure_elasticsearch,
    materialize_ticks,
    tick_resources,
    train,
)
from tauxcharge_assets.data.simulator import SimulationSpec, save_labels, simulate
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import ElasticsearchResource, elasticsearch_from_env, mlflow_from_env
from tauxcharge_assets.elastic.bulk import bulk_write, scan_pit
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets.settings import STEP_MINUTES, data_dir, to_utc


def load_simulation(elasticsearch: ElasticsearchResource, spec: SimulationSpec, labels_path: Path) -> int:
    with Step(f"Simulating {spec.n_names} names x {spec.days:g} days"):
        sim = simulate(spec)
    save_labels(sim, labels_path)
    client = elasticsearch.get_client()
    # The documents are counted as the bulk writer pulls them (at most two chunks ahead of the server).
    expected = round(int(sim.values.notna().to_numpy().sum()) * (1 + spec.duplicate_rate))
    with Step(f"Writing to {elasticsearch.indices.metrics}", total=expected, unit="doc") as step:
        return bulk_write(client, elasticsearch.indices.metrics, step.wrap(sim.documents()))


@dataclass(frozen=True)
class DemoResult:
    partition_keys: list[str]
    forecasts: pd.DataFrame
    anomalies: pd.DataFrame
    documents_before: dict[str, int]
    documents_after: dict[str, int]


def run_demo(
    n_names: int = 50,
    days: float = 14.0,
    end: pd.Timestamp | None = None,
    replay_slots: int = 12,
    seed: int = 7,
) -> DemoResult:
    ensure_elasticsearch()
    end = to_utc(end) if end is not None else pd.Timestamp.now(tz="UTC").floor("D")
    elasticsearch, mlflow = elasticsearch_from_env(), mlflow_from_env()
    resources = tick_resources(elasticsearch, mlflow)
    # Outside a run, EnvVar fields must be resolved explicitly before use.
    elasticsearch = elasticsearch.process_config_and_initialize()
    mlflow = mlflow.process_config_and_initialize()
    instance = dagster_instance()
    client = elasticsearch.get_client()
    indices = elasticsearch.indices
    before = {kind: count_documents(client, getattr(indices, kind)) for kind in ("metrics", "forecasts", "anomalies")}
    spec = SimulationSpec(n_names=n_names, days=days, end=end, seed=seed, recent_anomalies=max(3, n_names // 10))
    print(
        f"Loading {n_names} simulated names x {days:g} days ending {end} into {indices.metrics} ...",
        flush=True,
    )
    load_simulation(elasticsearch, spec, data_dir() / "simulator_labels.json")
    step = pd.Timedelta(minutes=STEP_MINUTES)
    train_until = end - replay_slots * step
    latest = mlflow.latest_version()
    stored = data_dir() / "storage" / "trained_model"
    champion = mlflow.champion_version()
    if latest and latest["tags"].get("trained_through") == train_until.isoformat() and stored.exists() and champion:
        print(f"Reusing model version {latest['version']} trained through {train_until}.", flush=True)
    else:
        print(f"Training the global LSTM on {days:g} days through {train_until} ...", flush=True)
        try:
            with Step("Training (retrain job)"), quiet_run_failures():
                promoted = train(resources, train_until, instance)
        except RuntimeError as error:
            if type(error) is not RuntimeError:  # e.g. ElasticsearchUnavailableError: reported as itself
                raise
            # ``train`` says only that trained_model did not materialize; the why is in the run's events.
            reason = latest_run_failure(instance) or str(error)
            raise UserFacingError(
                f"Training failed: {reason} (`dagster dev` shows the run's log)", EXIT_UNAVAILABLE
            ) from error
        champion = mlflow.champion_version()
        if champion is None:  # the first version lost to the naive forecast: the ticks cannot forecast
            reason = latest_run_failure(instance) or "the new version was not promoted"
            raise UserFacingError(
                f"No champion model to forecast with: {reason}. Rerun with more history (--days, --names), or "
                "promote a version by hand (`python -m tauxcharge_assets promote --version N`).",
                EXIT_UNAVAILABLE,
            )
        print(f"Champion: version {champion} ({'new' if promoted else 'kept: the new version did not win'}).")
    keys = [partition_key_ending_at(train_until + (i + 1) * step) for i in range(replay_slots)]
    print(f"Materializing the tick assets for {len(keys)} partitions {keys[0]} .. {keys[-1]} ...", flush=True)
    with Step("Tick runs", total=len(keys), unit="partition") as ticks, quiet_run_failures():
        materialize_ticks(keys, resources, instance, progress=lambda key: ticks.update())
    after = {kind: count_documents(client, getattr(indices, kind)) for kind in ("metrics", "forecasts", "anomalies")}
    forecasts = _documents_frame(client, indices.forecasts, {"term": {"issued_at": end.isoformat()}})
    window = {"range": {"timestamp": {"gte": (train_until).isoformat(), "lt": end.isoformat()}}}
    anomalies = _documents_frame(client, indices.anomalies, window)
    return DemoResult(keys, forecasts, anomalies, before, after)


def _documents_frame(client, index: str, query: dict) -> pd.DataFrame:
    return pd.DataFrame([hit["_source"] for hit in scan_pit(client, index, query)])


def print_report(result: DemoResult) -> None:
    pd.set_option("display.width", 160)
    pd.set_option("display.max_rows", 500)
    frame = result.forecasts
    if frame.empty:
        print("No forecasts were issued.")
    else:
        first, last = 1, int(frame["horizon_steps"].max())
        table = pd.concat(
            {
                f"t+{h * STEP_MINUTES}min {column}": frame[frame["horizon_steps"] == h].set_index("name")[column]
                for h in (first, last)
                for column in ("lower", "value", "upper")
            },
            axis=1,
        )
        print(
            f"\nForecasts issued at {frame['issued_at'].iloc[0]} for {len(table)} names "
            f"(model {frame['model_name'].iloc[0]} v{frame['model_version'].iloc[0]}):"
        )
        print(table.round(2).to_string())
    anomalies = result.anomalies
    print(
        f"\nAnomaly report over partitions {result.partition_keys[0]} .. {result.partition_keys[-1]}: "
        f"{len(anomalies)} anomalies"
    )
    if not anomalies.empty:
        shown = anomalies.sort_values("timestamp")[
            ["timestamp", "name", "actual", "forecast", "score", "severity", "reason"]
        ]
        print(shown.to_string(index=False))
    print("\nDocuments per index, before -> after this run:")
    for kind, before in result.documents_before.items():
        print(f"  {kind:10s} {before:>9d} -> {result.documents_after[kind]:>9d}")
