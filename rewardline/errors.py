"""Exceptions that stages raise to stop the pipeline with a message for people."""

from __future__ import annotations


class GateFailed(RuntimeError):
    """A stage's quality gate failed; the message names each failed check with value and threshold."""


class ConfigError(ValueError):
    """A parameter in params.yaml (or ``--set``) has a value the stage cannot use."""
