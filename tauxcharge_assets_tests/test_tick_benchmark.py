"""The tick benchmark at CI size (20 names, a few partitions, one process): it must keep running, and
the incremental window it builds must equal a cold read."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tauxcharge_assets.defs.resources import ElasticsearchResource

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """The benchmark modules, with every environment variable they set restored afterwards."""
    for variable in (
        "TAUXCHARGE_HOME",
        "DAGSTER_HOME",
        "TAUXCHARGE_PARTITIONS_START",
        "TAUXCHARGE_ES_URL",
        "PYTHONPYCACHEPREFIX",
    ):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    monkeypatch.setenv("TAUXCHARGE_INDEX_PREFIX", "unused")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import tick_benchmark
    import tick_report

    yield tick_benchmark, tick_report
    for module in ("tick_benchmark", "tick_report", "tick_scenarios", "tick_data", "tick_naive"):
        sys.modules.pop(module, None)


def test_the_small_benchmark_runs_and_incremental_equals_cold(
    harness: tuple[ModuleType, ModuleType], es_url: str, tmp_path: Path
) -> None:
    tick_benchmark, tick_report = harness
    from tauxcharge_assets.defs.resources import MlflowResource

    saved = MlflowResource.champion_version, MlflowResource.load_model
    settings = tick_benchmark.small_settings(tick_benchmark.Settings(scales=[], url=es_url))
    try:
        results = tick_benchmark.run_benchmark(settings, log=lambda _line: None)
    finally:
        MlflowResource.champion_version, MlflowResource.load_model = saved
        client = ElasticsearchResource(url=es_url).get_client()
        client.indices.delete(index=f"{tick_benchmark.dataset_prefix(20)}-*", allow_no_indices=True)
    scale = results["scales"]["20"]
    assert scale["incremental_equals_cold"] is True
    assert scale["steady"]["reads"] == ["incremental"] * settings.runs
    assert scale["cold"]["reads"] == ["cold"] * settings.runs
    assert scale["new_worker"]["reads"] == ["incremental"] * settings.runs  # from the window kept in Elasticsearch
    for scenario in ("steady", "cold", "naive", "dagster_run"):
        assert scale[scenario]["median_s"] > 0 and len(scale[scenario]["runs_s"]) == settings.runs
    assert {"fetch", "clean", "sequences", "forecast", "forecast.write"} <= set(scale["steady"]["stages_median_s"])
    assert scale["backfill_functions"]["partitions"] == settings.backfill_partitions
    # the first partition reads cold, or from the hourly window an earlier scenario kept in Elasticsearch
    reads = scale["backfill_functions"]["reads"]
    assert sum(reads.values()) == settings.backfill_partitions and reads.get("cold", 0) <= 1
    assert scale["storage_bytes"]["cleaned_series"] > 0
    assert scale["backfill_range_inprocess"]["partitions"] == settings.backfill_partitions  # one run, the range
    assert scale["shards"]["count"] == 2 and all(shard["median_s"] > 0 for shard in scale["shards"]["shards"])
    assert [shard["reads"] for shard in scale["shards"]["shards"]] == [["incremental"] * settings.runs] * 2
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\n## Forecast quality\n\nkept as is\n")
    results["command"], results["machine"] = "pytest", tick_report.machine()
    tick_report.replace_section(markdown, tick_report.render(results))
    tick_report.replace_section(markdown, tick_report.render(results))  # a rerun replaces, never appends
    text = markdown.read_text()
    assert text.count(tick_report.SECTION) == 1 and text.count(tick_report.START) == 1
    assert "kept as is" in text and "| steady tick, functions" in text
    assert "| steady tick, one name shard" in text
