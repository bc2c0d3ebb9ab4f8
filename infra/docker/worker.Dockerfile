# Prefect worker with rewardline installed (the flows run inside it as subprocesses).
# Build context: the repository root (see docker-compose.yml), filtered by /.dockerignore.
# The image holds the repository as a checkout: .git (DVC and the lineage tags need it; `git rev-parse`),
# .dvc/config (the remotes) and every file `dvc repro` reads (dvc.yaml, dvc.lock, params.yaml, stages/,
# rewardline/, data/raw/). Runs of the *-local deployments work in it (REWARDLINE_PROJECT_DIR); the
# others clone the repository and `dvc pull` (prefect.yaml).
FROM prefecthq/prefect:3.8.8-python3.11
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/rewardline
COPY . .
RUN pip install --no-cache-dir -c requirements/constraints.txt -e . \
    && git config --system --add safe.directory /opt/rewardline \
    && git rev-parse --verify HEAD >/dev/null && test -f .dvc/config && dvc --version
ENV REWARDLINE_PROJECT_DIR=/opt/rewardline
