# MLflow tracking server with the PostgreSQL driver, boto3 (artifacts proxied to S3) and Flask-WTF (basic-auth app).
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 Flask-WTF==1.3.0 psycopg2-binary==2.9.10 boto3==1.43.117 \
    && useradd --create-home mlflow \
    && mkdir -p /var/lib/mlflow-auth && chown mlflow /var/lib/mlflow-auth  # a new named volume takes this owner
USER mlflow
EXPOSE 5000
