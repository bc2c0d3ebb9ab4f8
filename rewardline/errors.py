"""Exceptions that stages raise to stop the pipeline with a message for people."""

from __future__ import annotations


class GateFailed(RuntimeError):
    """A stage's quality gate failed; the message names each failed check with value and threshold."""


class ConfigError(ValueError, KeyError):
    """A parameter in params.yaml (or ``--set``) is unknown or has a value the stage cannot use."""

    __str__ = Exception.__str__  # KeyError would quote the message
