"""The champion gate: a new version becomes the champion only when it wins the backtest."""

from dagster import AssetCheckResult, asset_check

from tauxcharge_assets.defs.model.assets import trained_model
from tauxcharge_assets.model.registry import ModelHandle


def champion_gate(handle: ModelHandle) -> AssetCheckResult:
    decision = handle.decision
    if not decision:
        return AssetCheckResult(passed=False, metadata={"reason": "the version carries no backtest decision"})
    return AssetCheckResult(
        passed=bool(decision["promote"]),
        description=decision["reason"],
        metadata={
            "version": handle.version,
            "metric": decision["metric"],
            "challenger": decision["challenger"],
            **{f"rival: {name}": value for name, value in decision["rivals"].items()},
            "champion_version_before": str(decision["champion_version_before"]),
            "reason": decision["reason"],
        },
    )


@asset_check(asset=trained_model, blocking=True)
def challenger_beats_champion(trained_model: ModelHandle) -> AssetCheckResult:
    """The new version beats the champion and every baseline on the same backtest (median MASE), or it
    does not become the champion: a failure stops ``champion_model`` in the same run."""
    return champion_gate(trained_model)


ALL_CHECKS = [challenger_beats_champion]
