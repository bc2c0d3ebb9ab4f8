"""Registry: model bundles, lineage and the MLflow-backed model registry (the only mlflow importer)."""
