"""Evaluation: metrics, intervals, selective prediction, compute, the report of a run, plots and
analyses."""
