"""Prefect flows: ``pipeline`` (the DVC stages as tasks) and ``retrain`` (scheduled retraining).

Prefect is imported only here; every step calls :mod:`rewardline` or runs DVC.
"""
