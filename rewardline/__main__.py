"""``python -m rewardline``: the ``rewardline`` command."""

from rewardline.cli import app

if __name__ == "__main__":
    app(prog_name="rewardline")
