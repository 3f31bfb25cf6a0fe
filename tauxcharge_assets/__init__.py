"""Forecast the load rate of every monitored name every 5 minutes and report anomalies, as Dagster assets."""
