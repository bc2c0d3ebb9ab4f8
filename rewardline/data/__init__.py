"""Data contract, source adapters and ingest: raw rankings in, canonical tables plus quarantine out."""
