"""DVC stage ``register``: the stage outputs → one MLflow pipeline run; a gated model → the registry.

Logs the parent run with a nested run per stage, then, only if every gate in
``reports/evaluate/gates.json`` passed, registers the model under ``register.model_name`` with
alias ``register.alias`` (``challenger``). Writes ``reports/register/registration.json``.
"""

from rewardline.config import build, load_params
from rewardline.errors import GateFailed
from rewardline.paths import REGISTRATION
from rewardline.registry import open_registry
from rewardline.registry.record import RegisterConfig, register_pipeline
from rewardline.stage import stage_main


def main() -> None:
    config = build(RegisterConfig, load_params().get("register"), name="register")
    registry = open_registry(".")
    result = register_pipeline(".", config, registry)
    if not result["registered"]:
        raise GateFailed(f"register: not registering the model ({result.get('reason')}); "
                         f"pipeline run {result['parent_run_id']} logged; see {REGISTRATION}")
    aliases = ", ".join(f"@{a}" for a in result["aliases"])
    again = " (already registered: the same bundle)" if result.get("already_registered") else ""
    print(f"Registered {result['model_name']} version {result['version']}{again} ({aliases}); "
          f"pipeline run {result['parent_run_id']}")
    print(f"Look at it: {registry.ui_command()}")
    print(f"Promote it: rewardline promote --version {result['version']}")


if __name__ == "__main__":
    stage_main(main)
