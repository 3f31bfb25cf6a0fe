"""Champion/challenger: a new model replaces the champion only when it wins on the same backtest.

The rule is deliberately simple so operators can check it from the numbers in the metadata: on the
rolling-origin backtest of the latest held-out days, the challenger's median MASE over all horizons
must be lower than the champion's (when there is one) and lower than every baseline's.
A tie is not a win, and a challenger with nothing finite to compare against (no baseline or champion
scored on the backtest) is not promoted: absence of evidence is not a win.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

CHALLENGER = "challenger"
CHAMPION = "champion"
DECISION_METRIC = "median_mase"
DECISION_HORIZON = "mean"


def promotion_decision(
    summary: pd.DataFrame,
    baselines: Sequence[str],
    champion_version: str | None,
    metric: str = DECISION_METRIC,
    horizon: str = DECISION_HORIZON,
) -> dict[str, Any]:
    """``promote`` plus every number it was decided on, ready for asset-check metadata."""
    rows = summary[summary["horizon"].astype(str) == horizon].set_index("forecaster")[metric]
    if CHALLENGER not in rows:
        raise ValueError(f"The backtest summary has no {metric} row for the challenger at horizon {horizon!r}.")
    challenger = float(rows[CHALLENGER])
    rivals = {name: float(rows[name]) for name in baselines if name in rows and np.isfinite(rows[name])}
    if champion_version is not None and CHAMPION in rows and np.isfinite(rows[CHAMPION]):
        rivals[f"champion (version {champion_version})"] = float(rows[CHAMPION])
    beaten = {name: bool(challenger < value) for name, value in rivals.items()}  # NaN never wins; a tie loses
    # Nothing to beat is no evidence: ``all({})`` is True, so an empty backtest must not promote.
    promote = bool(np.isfinite(challenger)) and bool(rivals) and all(beaten.values())
    losses = [f"{name} ({rivals[name]:.3f})" for name, won in beaten.items() if not won]
    if promote:
        reason = f"challenger {metric} {challenger:.3f} beats " + ", ".join(f"{n} ({v:.3f})" for n, v in rivals.items())
    elif not rivals:
        reason = (
            f"challenger {metric} {challenger:.3f} has no rival to beat: no baseline or champion has a finite "
            f"{metric} on this backtest (too little history?), so it is not promoted"
        )
    else:
        reason = f"challenger {metric} {challenger:.3f} does not beat " + ", ".join(losses)
    return {
        "promote": promote,
        "metric": f"{metric} over horizons ({horizon})",
        "challenger": challenger,
        "rivals": rivals,
        "champion_version_before": champion_version,
        "reason": reason,
    }
