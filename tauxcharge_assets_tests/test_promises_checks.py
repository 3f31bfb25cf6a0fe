"""The README's data-quality gates, each given data that fails it.

Unit level: the plain check functions on small frames. Through Dagster: one tick per gate, with a stub
model (no training, no TensorFlow) patched onto ``MlflowResource`` for the test only; a blocking gate
must leave every downstream step *skipped* (never started), not failed, and be the run's only failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, FilesystemIOManager, materialize

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.ingest import checks as ingest_checks
from tauxcharge_assets.defs.ingest.assets import RawExtract
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.defs.serving import checks as serving_checks
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic.bulk import bulk_write

STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
TICK_ASSET_NAMES = [
    "raw_es_extract", "cleaned_series", "quarantined_documents", "encoded_names", "sequence_tensors", "forecasts",
    "anomaly_report",
]


# ---------------------------------------------------------------------------------------------------
# Unit level: the plain functions.


def raw_extract(documents: int, invalid: int) -> RawExtract:
    return RawExtract("idx", END, "cold", documents, documents, invalid, END - STEP)


def cleaned(values: pd.DataFrame, observed: pd.DataFrame | None = None) -> CleanedSeries:
    return CleanedSeries(values, observed if observed is not None else values.notna(), {})


def grid_frame(names: int = 10, slots: int = 288, value: float = 50.0) -> pd.DataFrame:
    index = pd.date_range(end=END - STEP, periods=slots, freq="5min", name="timestamp")
    return pd.DataFrame(value, index=index, columns=[f"n{i}" for i in range(names)])


def test_values_in_range_fails_above_two_percent_of_invalid_documents() -> None:
    assert ingest_checks.values_in_range(raw_extract(1000, 20)).passed is True  # 2 %: at the threshold
    failed = ingest_checks.values_in_range(raw_extract(1000, 21))
    assert failed.passed is False and failed.metadata["invalid_values"].value == 21


def test_completeness_fails_when_more_than_a_tenth_of_the_names_are_sparse() -> None:
    values = grid_frame()
    observed = values.notna()
    observed.iloc[: int(288 * 0.25), 0] = False  # one name in ten with 75 % of its points: 90 % complete
    assert ingest_checks.completeness(cleaned(values, observed)).passed is True
    observed.iloc[: int(288 * 0.25), 1] = False  # two in ten: 80 % complete
    failed = ingest_checks.completeness(cleaned(values, observed))
    assert failed.passed is False and failed.metadata["complete_names_share"].value == pytest.approx(0.8)
    assert ingest_checks.completeness(cleaned(grid_frame(names=0))).passed is False  # no name at all


def test_unique_slots_fails_on_a_duplicate_slot_a_duplicate_name_or_a_value_out_of_range() -> None:
    assert ingest_checks.unique_slots(cleaned(grid_frame())).passed is True
    values = grid_frame()
    duplicated_slot = pd.concat([values, values.iloc[[-1]]])
    result = ingest_checks.unique_slots(cleaned(duplicated_slot))
    assert result.passed is False and result.metadata["duplicated_slots"].value == 1
    duplicated_name = values.copy()
    duplicated_name.columns = ["n0", *values.columns[:-1]]
    result = ingest_checks.unique_slots(cleaned(duplicated_name))
    assert result.passed is False and result.metadata["duplicated_names"].value == 1
    for bad in (100.5, -0.5):
        out_of_range = values.copy()
        out_of_range.iloc[3, 2] = bad
        result = ingest_checks.unique_slots(cleaned(out_of_range))
        assert result.passed is False and result.metadata["values_outside"].value == 1


def forecast_rows(lower: list[float], value: list[float], upper: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"lower": lower, "value": value, "upper": upper})


def test_finite_forecasts_fails_on_nan_infinity_disorder_or_nothing() -> None:
    assert serving_checks.finite_forecasts(forecast_rows([1, 2], [2, 2], [3, 2])).passed is True
    for lower, value, upper in (
        ([1, np.nan], [2, 2], [3, 3]),
        ([1, 1], [2, np.inf], [3, 3]),
        ([1, 1], [2, 2], [3, -np.inf]),
    ):
        result = serving_checks.finite_forecasts(forecast_rows(lower, value, upper))
        assert result.passed is False and result.metadata["non_finite"].value == 1
    for lower, value, upper in (([2.5, 1], [2, 2], [3, 3]), ([1, 1], [2, 2], [3, 1.5])):  # p10 > p50, p50 > p90
        result = serving_checks.finite_forecasts(forecast_rows(lower, value, upper))
        assert result.passed is False and result.metadata["interval_not_ordered"].value == 1
    assert serving_checks.finite_forecasts(forecast_rows([], [], [])).passed is False


# ---------------------------------------------------------------------------------------------------
# Through Dagster: a tick per gate.


def test_the_gates_are_blocking_as_the_readme_says() -> None:
    specs = {spec.name: spec for check in ALL_CHECKS for spec in check.check_specs}
    assert {name: spec.blocking for name, spec in specs.items()} == {
        "raw_es_extract_is_fresh": True,
        "raw_values_in_range": False,
        "quarantine_share_within_limit": False,
        "cleaned_series_is_complete": True,
        "cleaned_series_has_unique_slots": True,
        "forecasts_are_finite": True,
        "challenger_beats_champion": True,
    }


class StubModel:
    """The forecasts asset's model interface without TensorFlow: the last value +-1 (or ``fill``)."""

    horizon = 12

    def __init__(self, fill: float | None = None) -> None:
        self.fill = fill

    def batch_for(self, names: Any, name_ids: Any, values: np.ndarray, mask: Any, origin: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def predict_quantiles(self, batch: np.ndarray) -> np.ndarray:
        last = np.repeat(batch[:, -1:], self.horizon, axis=1)
        quantiles = np.stack([last - 1.0, last, last + 1.0], axis=-1)
        return quantiles if self.fill is None else np.full_like(quantiles, self.fill)

    def forecast_tick(
        self, names: Any, name_ids: Any, values: np.ndarray, mask: Any, origin: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        quantiles = self.predict_quantiles(self.batch_for(names, name_ids, values, mask, origin))
        return quantiles, np.full(len(names), "lstm")

    def unseen_count(self, names: Any) -> int:
        return 0


def use_stub_model(monkeypatch: pytest.MonkeyPatch, model: StubModel) -> None:
    monkeypatch.setattr(MlflowResource, "champion_version", lambda self: "stub")
    monkeypatch.setattr(MlflowResource, "load_model", lambda self, version: model)


def step_outcomes(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """Each step's outcome from a run's event log: succeeded, failed, or skipped (never started: a
    STEP_SKIPPED event, or Dagster's "Not executing" log when an upstream step failed)."""
    outcome: dict[str, str] = {}
    for record in instance.all_logs(run_id):
        key, event = record.step_key, record.dagster_event
        if key is None:
            continue
        if event is None:
            if "Not executing" in record.user_message:
                outcome.setdefault(key, "skipped")
        elif event.is_step_skipped:
            outcome.setdefault(key, "skipped")
        elif event.is_step_start:
            outcome[key] = "started"
        elif event.is_step_failure:
            outcome[key] = "failed"
        elif event.is_step_success:
            outcome[key] = "succeeded"
    return outcome


@dataclass
class Tick:
    result: Any
    instance: DagsterInstance

    def outcomes(self) -> dict[str, str]:
        return step_outcomes(self.instance, self.result.run_id)

    def checks(self) -> dict[str, Any]:
        return {e.check_name: e for e in self.result.get_asset_check_evaluations()}

    def materialized(self) -> set[str]:
        return {e.asset_key.to_user_string() for e in self.result.get_asset_materialization_events()}

    def assert_blocked_by(self, check_name: str, downstream: list[str]) -> None:
        """The check failed, its step is the run's only failure, and every downstream asset was skipped."""
        evaluations = self.checks()
        assert evaluations[check_name].passed is False
        assert evaluations[check_name].severity == AssetCheckSeverity.ERROR
        others = {name: e.passed for name, e in evaluations.items() if name != check_name}
        assert all(others.values()), others  # no other gate is the reason
        outcomes = self.outcomes()
        failed = {key for key, outcome in outcomes.items() if outcome == "failed"}
        assert failed == {key for key in outcomes if key.endswith(check_name)}, outcomes
        assert {name: outcomes.get(name) for name in downstream} == dict.fromkeys(downstream, "skipped"), outcomes
        assert not self.materialized() & set(downstream)


@pytest.fixture
def tick_data(es_url: str, tmp_path) -> Iterator[Callable[..., Tick]]:
    """Loads simulated documents (edited by the test) into fresh indices and runs one tick ending at END."""
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-gates-{uuid.uuid4().hex[:8]}")
    client = es.get_client()
    sim = simulate(
        SimulationSpec(
            n_names=5, days=1.5, end=END, seed=5, missing_rate=0.0, duplicate_rate=0.0, late_rate=0.0,
            bad_value_rate=0.0, anomalies_per_name=0.0,
        )
    )  # fmt: skip

    def run(edit: Callable[[list[dict]], list[dict]] = lambda documents: documents, config: dict | None = None) -> Tick:
        documents = [dict(document) for _id, document in sim.documents()]
        documents = edit(documents)
        bulk_write(client, es.indices.metrics, [(f"doc-{i}", d) for i, d in enumerate(documents)])
        instance = DagsterInstance.ephemeral()
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=TICK_ASSETS,
            partition_key=partition_key_ending_at(END),
            resources={
                "elasticsearch": es,
                "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}"),
                "alerts": AlertWebhookResource(),
                "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "storage")),
            },
            instance=instance,
            run_config={**QUIET, **({"ops": config} if config else {})},
            raise_on_error=False,
        )
        return Tick(result, instance)

    yield run
    client.indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


def in_last_day(document: dict) -> bool:
    return pd.Timestamp(document["timestamp"]) >= END - pd.Timedelta(days=1)


def test_a_clean_tick_passes_every_gate(tick_data, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline of the tests below: the same data unedited passes every check and runs every step."""
    use_stub_model(monkeypatch, StubModel())
    tick = tick_data()
    assert tick.result.success, tick.outcomes()
    assert all(e.passed for e in tick.checks().values()) and len(tick.checks()) == 6
    assert tick.materialized() == set(TICK_ASSET_NAMES)


def test_out_of_range_values_warn_and_do_not_stop_the_tick(tick_data, monkeypatch: pytest.MonkeyPatch) -> None:
    """``raw_values_in_range`` is non-blocking: it fails with WARN severity and every step still runs."""
    use_stub_model(monkeypatch, StubModel())

    def five_percent_invalid(documents: list[dict]) -> list[dict]:
        recent = [d for d in documents if in_last_day(d)]
        for i, document in enumerate(recent[::20]):  # 5 % of the window's documents
            document["value"] = 150.0 if i % 2 else "n/a"
        return documents

    tick = tick_data(five_percent_invalid)
    in_range = tick.checks()["raw_values_in_range"]
    assert in_range.passed is False and in_range.severity == AssetCheckSeverity.WARN
    assert in_range.metadata["invalid_share"].value > 0.02
    assert tick.result.success, tick.outcomes()
    assert tick.materialized() == set(TICK_ASSET_NAMES)
    assert "failed" not in tick.outcomes().values()


def test_an_incomplete_window_skips_everything_after_the_cleaning(tick_data, monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_model(monkeypatch, StubModel())

    def thin_out(documents: list[dict]) -> list[dict]:
        """One name in five keeps every other point of the day (and its newest): 80 % of names complete."""
        sparse = min(d["name"] for d in documents)
        newest = max(d["timestamp"] for d in documents)
        return [
            d
            for i, d in enumerate(documents)
            if d["name"] != sparse or not in_last_day(d) or d["timestamp"] == newest or i % 2
        ]

    tick = tick_data(thin_out)
    assert tick.checks()["cleaned_series_is_complete"].metadata["complete_names_share"].value == pytest.approx(0.8)
    tick.assert_blocked_by(
        "cleaned_series_is_complete", ["encoded_names", "sequence_tensors", "forecasts", "anomaly_report"]
    )
    assert {"raw_es_extract", "cleaned_series"} <= tick.materialized()


def test_values_outside_the_range_after_cleaning_skip_everything_after_it(
    tick_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleaning configured to keep values up to 1000 lets a 150 % through: the gate (rules' [0, 100]) stops it."""
    use_stub_model(monkeypatch, StubModel())

    def one_overload(documents: list[dict]) -> list[dict]:
        recent = [d for d in documents if in_last_day(d)]
        recent[len(recent) // 2]["value"] = 150.0
        return documents

    tick = tick_data(one_overload, config={"cleaned_series": {"config": {"value_max": 1000.0}}})
    assert tick.checks()["cleaned_series_has_unique_slots"].metadata["values_outside"].value == 1
    tick.assert_blocked_by(
        "cleaned_series_has_unique_slots", ["encoded_names", "sequence_tensors", "forecasts", "anomaly_report"]
    )


def test_a_model_forecasting_nan_skips_the_anomaly_report(tick_data, monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_model(monkeypatch, StubModel(fill=float("nan")))
    tick = tick_data()
    finite = tick.checks()["forecasts_are_finite"]
    assert finite.metadata["non_finite"].value == finite.metadata["forecasts"].value == 5 * 12
    assert AssetKey("forecasts").to_user_string() in tick.materialized()  # the forecasts step itself succeeded
    tick.assert_blocked_by("forecasts_are_finite", ["anomaly_report"])
