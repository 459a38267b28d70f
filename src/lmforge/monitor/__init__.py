"""Monitoring: metrics stream, telemetry, anomalies, plots, dashboard. Imports no later stage."""
