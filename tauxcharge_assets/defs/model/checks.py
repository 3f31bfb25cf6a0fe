"""The champion gate: a new version becomes the champion only when it wins the backtest."""

from dagster import AssetCheckResult, asset_check

from tauxcharge_assets.defs.model.assets import trained_model
from tauxcharge_assets.defs.resources import MlflowResource
from tauxcharge_assets.model.registry import ModelArtifactError, ModelHandle


def champion_gate(handle: ModelHandle, artifact_problem: str | None = None) -> AssetCheckResult:
    """``artifact_problem``: why the registered version does not load as a tick loads it (None: it loads).
    The backtest judged the model in memory; what a tick would run is what MLflow stored."""
    decision = handle.decision
    if artifact_problem is not None:
        return AssetCheckResult(
            passed=False,
            description=artifact_problem,
            metadata={"version": handle.version, "reason": artifact_problem},
        )
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
def challenger_beats_champion(mlflow: MlflowResource, trained_model: ModelHandle) -> AssetCheckResult:
    """The new version beats the champion and every baseline on the same backtest (median MASE), and its
    stored files load and run as a tick runs them, or it does not become the champion: a failure stops
    ``champion_model`` in the same run."""
    try:
        mlflow.load_model(trained_model.version)
    except ModelArtifactError as error:
        return champion_gate(trained_model, str(error))
    return champion_gate(trained_model)


ALL_CHECKS = [challenger_beats_champion]
