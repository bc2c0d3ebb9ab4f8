"""rewardline: annotator rankings in, calibrated and registered reward models out."""

__version__ = "0.1.0"
