"""DVC stage ``prm_evaluate``: the PRM + held-out (test split by problem) step-labelled solutions + candidate
solutions → ``reports/prm-evaluate/`` (step AUROC / accuracy / F1, first-error localisation, best-of-N vs
random pick, majority vote and oracle for each aggregate); gates ``prm.min_step_auroc``, ``prm.min_bon_gain``."""

from rewardline.config import build, load_params, section_of
from rewardline.evaluation.process import PrmConfig, prm_metrics, prm_train_config, write_prm_report
from rewardline.paths import PRM_CANDIDATES_DIR, PRM_EVALUATE_DIR, PRM_INGESTED_DIR, PRM_MODEL_DIR
from rewardline.stage import finish_gated_stage, stage_main
from rewardline.training.step_data import read_solutions


def main() -> None:
    params = load_params()
    cfg, train_cfg = build(PrmConfig, section_of(params, "prm"), name="prm"), prm_train_config(params)
    heldout = read_solutions(PRM_INGESTED_DIR, "test", train_cfg.prm_split_salt, train_cfg.prm_train_fraction,
                             train_cfg.prm_val_fraction)
    metrics = prm_metrics(PRM_MODEL_DIR, heldout, read_solutions(PRM_CANDIDATES_DIR), cfg, train_cfg.prm_neutral_as)
    write_prm_report(metrics, PRM_EVALUATE_DIR, cfg)
    finish_gated_stage("prm_evaluate", PRM_EVALUATE_DIR, show_report=True)


if __name__ == "__main__":
    stage_main(main)
