"""Evaluation: accuracy, calibration, length bias, champion comparison, gates, report and plots."""
