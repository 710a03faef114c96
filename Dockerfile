# The image docker-compose.yml runs for the API and both workers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY cli cli
COPY core core
COPY web web
COPY worker worker
COPY migrations migrations
# Editable, so `dcgan db upgrade` finds alembic.ini and migrations/ beside the code.
RUN pip install --no-cache-dir -e .
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["dcgan", "api", "--host", "0.0.0.0", "--port", "8000"]
