"""``python -m rewardline.cli``."""

from rewardline.cli import app

app(prog_name="rewardline")
