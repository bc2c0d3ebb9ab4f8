"""DVC stage ``prm_register``: a PRM whose ``prm_evaluate`` gates passed → MLflow registered model
``prm.model_name`` (``process-reward-model``) with alias ``challenger`` and tag ``model_type=prm``;
``reports/prm-register/registration.json`` either way."""

import json

from rewardline.config import build, load_params, section_of
from rewardline.evaluation.process import PrmConfig
from rewardline.registry import open_registry
from rewardline.registry.process import register_prm
from rewardline.stage import stage_main


def main() -> None:
    cfg = build(PrmConfig, section_of(load_params(), "prm"), name="prm")
    result = register_prm(".", open_registry("."), cfg.model_name)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    stage_main(main)
