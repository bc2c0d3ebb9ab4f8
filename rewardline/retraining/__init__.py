"""Retraining: the fresh-sample inbox, the exactly-once ledger, drift measures and the retrain cycle."""
