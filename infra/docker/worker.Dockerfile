# Prefect worker with rewardline installed (the flows run inside it as subprocesses).
# Build context: the repository root (see docker-compose.yml).
FROM prefecthq/prefect:3.8.8-python3.11
WORKDIR /opt/rewardline
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY rewardline ./rewardline
COPY flows ./flows
COPY stages ./stages
COPY dvc.yaml params.yaml ./
RUN pip install --no-cache-dir -c requirements/constraints.txt -e .
