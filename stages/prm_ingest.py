"""DVC stage ``prm_ingest``: params ``prm.sources`` / ``prm.candidates`` → ``data/prm/ingested`` (step-labelled
solutions, split by problem later) and ``data/prm/candidates`` (candidate solutions with outcomes, for
best-of-N only); the ingest gate (quarantined share, ``ingest.max_quarantine_share``) on both."""

from rewardline.config import build, load_params, section_of
from rewardline.data.ingest import IngestConfig, run_ingest
from rewardline.evaluation.process import PrmConfig
from rewardline.gates import check_output
from rewardline.paths import PRM_CANDIDATES_DIR, PRM_INGESTED_DIR
from rewardline.stage import finish_gated_stage, stage_main


def main() -> None:
    params = load_params()
    prm = build(PrmConfig, section_of(params, "prm"), name="prm")
    shared = {k: v for k, v in section_of(params, "ingest").items() if k != "sources"}
    run_ingest(build(IngestConfig, {**shared, "sources": prm.sources}, name="prm.sources"), PRM_INGESTED_DIR)
    run_ingest(build(IngestConfig, {**shared, "sources": prm.candidates}, name="prm.candidates"), PRM_CANDIDATES_DIR)
    check_output(PRM_CANDIDATES_DIR)
    finish_gated_stage("prm_ingest", PRM_INGESTED_DIR)


if __name__ == "__main__":
    stage_main(main)
