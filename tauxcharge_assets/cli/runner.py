"""The in-process runner shared by the demo, the command line, the tests and the benchmarks: the local
Elasticsearch on demand, a Dagster instance under the data folder, ticks and trainings run with
``dagster.materialize`` (one process, no daemon) and recorded so ``dagster dev`` shows them."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, materialize

from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource, alerts_from_env
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic import server
from tauxcharge_assets.settings import data_dir

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The tags with which Dagster itself marks a run over a partition range (a single-run backfill).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def ensure_elasticsearch() -> str:
    """The configured server, or the project's local one started on demand."""
    if os.environ.get("TAUXCHARGE_ES_URL"):
        return os.environ["TAUXCHARGE_ES_URL"]
    url = server.start()
    os.environ["TAUXCHARGE_ES_URL"] = url
    return url


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """One process at a time on this machine (an advisory lock, released when the process dies)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dagster_instance() -> DagsterInstance:
    """The instance under the data folder (or ``DAGSTER_HOME``), opened by one process at a time: opening
    creates the sqlite tables when they are missing, and two commands started together in a fresh data
    folder both created them: "table runs already exists" (test_concurrency, two ticks or two backfills at once)."""
    with _exclusive(data_dir() / ".dagster_instance.lock"):
        ensure_dagster_home()
        return DagsterInstance.get()


def ensure_dagster_home() -> str:
    """``DAGSTER_HOME``, or the project's own instance under the data folder (set in the environment)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "dagster.yaml"
        if not settings.exists():  # the project's own local instance: no telemetry banner in a user's output
            settings.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return os.environ["DAGSTER_HOME"]


def materialize_ticks(
    partition_keys: list[str],
    resources: dict[str, object],
    instance: DagsterInstance | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """One run per partition, in order; ``progress`` is called with each key once its run succeeded."""
    for key in partition_keys:
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=TICK_ASSETS,
            partition_key=key,
            resources=resources,
            instance=instance,
            run_config=QUIET,
            raise_on_error=True,
        )
        assert result.success, f"tick {key} failed"
        if progress is not None:
            progress(key)


def materialize_range(
    first: str,
    last: str,
    resources: dict[str, object],
    instance: DagsterInstance | None = None,
    run_config: dict | None = None,
) -> str:
    """The tick assets over the partitions ``first`` .. ``last`` in one run, as a single-run backfill
    launched from the UI runs them (``defs.ranges``); returns the run id."""
    result = materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=TICK_ASSETS,
        resources=resources,
        instance=instance,
        run_config=QUIET if run_config is None else run_config,
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        raise_on_error=True,
    )
    assert result.success, f"the run over {first} .. {last} failed"
    return result.run_id


def train(
    resources: dict[str, object], train_until: pd.Timestamp, instance: DagsterInstance | None, **config: object
) -> bool:
    """The retrain job's assets; False when the promotion gate kept the previous champion."""
    result = materialize(
        [*ALL_ASSETS],
        selection=MODEL_ASSETS,
        resources=resources,
        instance=instance,
        run_config={
            **QUIET,
            "ops": {"trained_model": {"config": {"train_until": train_until.isoformat(), **config}}},
        },
        raise_on_error=False,
    )
    trained = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["trained_model"]]
    if not trained:
        raise RuntimeError("trained_model did not materialize: see the run's logs above.")
    return any(e.asset_key.path == ["champion_model"] for e in result.get_asset_materialization_events())


def tick_resources(elasticsearch: ElasticsearchResource, mlflow: MlflowResource) -> dict[str, object]:
    """The code location's resources: the same retention-bound IO manager as ``definitions``."""
    return {
        "elasticsearch": elasticsearch,
        "mlflow": mlflow,
        "alerts": alerts_from_env(),
        "io_manager": RetainedFilesystemIOManager(base_dir=str(data_dir() / "storage")),
    }
