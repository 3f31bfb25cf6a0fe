"""Markdown for the tick benchmark's results, and its place in BENCHMARKS.md.

The generated tables sit between two markers inside the section ``## Tick performance at 10,000
names``; a new run replaces only them, so the hand-written analysis around them stays.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

SECTION = "## Tick performance at 10,000 names"
STAGE_ORDER = ["fetch", "clean", "encode", "sequences", "forecast", "anomalies"]
START, END = "<!-- tick-benchmark:start -->", "<!-- tick-benchmark:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kib = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)"
    )


def _seconds(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s ({value / 60:.1f} min)"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def _cell(scale: dict[str, Any], key: str) -> str:
    entry = scale.get(key)
    if not entry:
        return "—"
    return f"{_seconds(entry['median_s'])} ({', '.join(f'{r:.2f}' for r in entry['runs_s'])})"


def render(results: dict[str, Any]) -> str:
    scales: dict[str, dict[str, Any]] = results["scales"]
    names = sorted(scales, key=int)
    header = "| | " + " | ".join(f"{int(n):,} names" for n in names) + " | target |"
    rule = "|---" * (len(names) + 2) + "|"
    lines = [
        START,
        f"Machine: {results.get('machine', '?')}. Elasticsearch: the project's local integ-test server "
        "(1 GiB heap) on the same machine.",
        "",
        f"Command: `{results.get('command', '')}`. Data: "
        + ", ".join(
            f"{int(n):,} names x {s['days']:g} days ({s.get('documents_loaded', 0):,} documents)"
            for n, s in ((n, {**scales[n], "days": _days(results, n)}) for n in names)
        )
        + f". Model version {results.get('model_version')} (small, 1 epoch: speed only).",
        "",
        "Medians of the timed runs (each run in brackets); each scenario runs in its own process.",
        "",
        header,
        rule,
    ]

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row(
        "steady tick, functions (fetch → … → write-back, anomalies)",
        [_cell(scales[n], "steady") for n in names],
        "≤ 3 s at 10,000",
    )
    row(
        "steady tick, Dagster run (fresh `dagster job execute` process)",
        [_cell(scales[n], "dagster_run") for n in names],
        "≤ 10 s at 10,000",
    )
    row("cold tick, functions (whole 24 h window)", [_cell(scales[n], "cold") for n in names], "≤ 20 s at 10,000")
    row(
        "tick on a new worker, functions (no local state; the hourly window from Elasticsearch)",
        [_cell(scales[n], "new_worker") for n in names],
        "≤ 20 s at 10,000 (cold start)",
    )
    row(
        "steady tick, functions, without the anomaly step",
        [_seconds(scales[n].get("steady", {}).get("without_anomalies_median_s")) for n in names],
    )
    row(
        "naive tick (query per name, request per forecast; no anomaly step)", [_cell(scales[n], "naive") for n in names]
    )
    row(
        "naive ÷ steady, same stages (fetch → forecast write-back)",
        [_ratio(scales[n], "naive", "steady", "without_anomalies_median_s") for n in names],
        "≥ 20x at 1,000",
    )
    row(
        "naive ÷ steady, Elasticsearch I/O only (fetch + forecast write)",
        [_io_ratio(scales[n]) for n in names],
    )
    row(
        "naive ÷ steady, whole tick (ours with the anomaly step)", [_ratio(scales[n], "naive", "steady") for n in names]
    )
    row("cold ÷ steady", [_ratio(scales[n], "cold", "steady") for n in names])
    for days, target in ((1, "≤ 2 min at 1,000"), (7, "≤ 10 min at 1,000")):
        row(
            f"{days}-day backfill, one Dagster run (`python -m tauxcharge_assets backfill`)",
            [_backfill(scales[n].get(f"backfill_dagster_{days}d")) for n in names],
            target,
        )
    for days in (1, 7):
        row(
            f"peak RSS, {days}-day backfill process",
            [_mib(scales[n].get(f"backfill_dagster_{days}d", {}).get("peak_rss_mib")) for n in names],
            "≤ 2 GiB",
        )
    row(
        "steady tick as name shards, all at once: wall of the slowest shard's process",
        [_shards_wall(scales[n].get("shards")) for n in names],
    )
    row(
        "steady tick, one name shard (median over shards of each shard's median)",
        [_shard_median(scales[n].get("shards")) for n in names],
    )
    row(
        "one-day backfill, functions only",
        [_seconds(scales[n].get("backfill_functions", {}).get("total")) for n in names],
    )
    for key, label in (
        ("steady", "peak RSS, steady tick process"),
        ("cold", "peak RSS, cold tick process"),
        ("dagster_run", "peak RSS, Dagster run process"),
        ("naive", "peak RSS, naive tick process"),
    ):
        row(label, [_mib(scales[n].get(key, {}).get("peak_rss_mib")) for n in names], "≤ 2 GiB at 10,000")
    lines += ["", "Steady tick, median seconds per stage (`stage.call` = time inside that call):", ""]
    stages = sorted({s for n in names for s in scales[n].get("steady", {}).get("stages_median_s", {})}, key=_order)
    lines += ["| stage | " + " | ".join(f"{int(n):,} names" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for stage in stages:
        cells = [_seconds(scales[n].get("steady", {}).get("stages_median_s", {}).get(stage)) for n in names]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    cold_stages = {n: scales[n].get("cold", {}).get("stages_median_s", {}) for n in names}
    lines.append("| cold tick: fetch | " + " | ".join(_seconds(cold_stages[n].get("fetch")) for n in names) + " |")
    rss = {n: scales[n].get("steady", {}).get("peak_rss_after_stage_mib", {}) for n in names}
    if any(rss.values()):
        lines += ["", "Steady tick process, peak RSS when each stage ended (high-water mark):", ""]
        lines += ["| stage | " + " | ".join(f"{int(n):,} names" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
        for stage in [s for s in STAGE_ORDER if any(s in rss[n] for n in names)]:
            lines.append(f"| {stage} | " + " | ".join(_mib(rss[n].get(stage)) for n in names) + " |")
    storage = {n: scales[n].get("storage_bytes") for n in names if scales[n].get("storage_bytes")}
    if storage:
        lines += ["", "Bytes on disk per partition (IO manager outputs, pickled), and the rolling-window state:", ""]
        lines += [
            "| output | " + " | ".join(f"{int(n):,} names" for n in storage) + " |",
            "|---" * (len(storage) + 1) + "|",
        ]
        for output in next(iter(storage.values())):
            lines.append(
                f"| {output} | " + " | ".join(f"{storage[n][output] / 2**20:,.2f} MiB" for n in storage) + " |"
            )
        totals = " | ".join(f"{sum(storage[n].values()) / 2**20:,.1f} MiB" for n in storage)
        lines.append(f"| **total per partition** | {totals} |")
    largest = names[-1]
    profile = scales[largest].get("profile")
    if profile:
        lines += [
            "",
            f"Profile of one steady tick at {int(largest):,} names (cProfile, top functions by own time):",
            "",
        ]
        lines += ["```", _trim_profile(profile), "```"]
    lines.append(END)
    return "\n".join(lines)


def _backfill(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "—"
    return f"{_seconds(entry['total'])}, {entry['total'] / entry['partitions']:.2f} s per partition"


def _shards_wall(entry: dict[str, Any] | None) -> str:
    return "—" if not entry else f"{entry['count']} shards: {_seconds(entry['wall_s'])} (warm-up included)"


def _shard_median(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "—"
    medians = [shard["median_s"] for shard in entry["shards"]]
    return (
        f"{_seconds(sorted(medians)[len(medians) // 2])} (shards: {', '.join(f'{m:.2f}' for m in medians)}; "
        f"{entry['count']} running at once on this machine's 2 cores)"
    )


def _days(results: dict[str, Any], names: str) -> float:
    for n, days in results["settings"]["scales"]:
        if str(n) == names:
            return days
    return float("nan")


def _ratio(scale: dict[str, Any], slow: str, fast: str, fast_key: str = "median_s") -> str:
    if not scale.get(slow) or not scale.get(fast) or not scale[fast].get(fast_key):
        return "—"
    return f"{scale[slow]['median_s'] / scale[fast][fast_key]:.1f}x"


def _io_ratio(scale: dict[str, Any]) -> str:
    if not scale.get("naive") or not scale.get("steady"):
        return "—"

    def io(entry: str) -> float:
        stages = scale[entry]["stages_median_s"]
        return stages.get("fetch", 0.0) + stages.get("forecast.write", 0.0)

    return f"{io('naive') / io('steady'):.1f}x" if io("steady") else "—"


def _order(stage: str) -> tuple[int, str]:
    from tick_scenarios import STAGES

    head = stage.split(".", 1)[0]
    return (STAGES.index(head) if head in STAGES else len(STAGES), stage)


def _trim_profile(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    kept = lines[start : start + 16]
    return "\n".join(
        re.sub(r"/\S*/site-packages/", "", re.sub(r"/\S*/tauxcharge_assets/", "tauxcharge_assets/", line))
        for line in kept
    )


def replace_section(path: Path, generated: str) -> None:
    """Put ``generated`` into the section, between the markers (created if missing); the rest is kept."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        path.write_text(before + generated + after)
        return
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{generated}\n"
    else:
        head, tail = text.split(SECTION, 1)
        text = head + SECTION + "\n\n" + generated + "\n" + tail
    path.write_text(text)
