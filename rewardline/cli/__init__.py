"""The ``rewardline`` command line (entry point ``rewardline.cli:app``; ``python -m rewardline``).

Every stage on explicit paths, for ad-hoc use and tests; ``dvc repro`` runs the same functions through
``stages/`` with the paths and params of ``dvc.yaml`` / ``params.yaml``. Importing the command modules
registers their commands on :data:`app`, in this order (the order ``--help`` lists them).
"""

from rewardline.cli.app import app

# isort: off
from rewardline.cli import stage_commands, model_commands, serve_commands, registry_commands  # noqa: F401
from rewardline.cli import select_commands  # noqa: F401
# isort: on

__all__ = ["app"]
