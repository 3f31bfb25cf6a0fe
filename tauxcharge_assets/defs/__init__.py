"""Dagster definitions, one folder per pipeline stage."""

import warnings

from dagster import BetaWarning

# Single-run backfills (``defs.ranges``) are this code location's way to backfill; Dagster 1.13 still marks
# ``backfill_policy`` beta and would say so once per tick asset on every import (every CLI command).
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
