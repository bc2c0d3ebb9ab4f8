# MLflow tracking server with the PostgreSQL driver and boto3 (artifacts proxied to S3).
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.10 boto3==1.43.117 \
    && useradd --create-home mlflow
USER mlflow
EXPOSE 5000
