FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producers ./producers
COPY config ./config
COPY simulator ./simulator
RUN pip install . && useradd --system --home /app wetbot && chown -R wetbot /app
USER wetbot

EXPOSE 8000
# docker-compose.yml runs the same image twice: web (this default) and worker.
CMD ["sh", "-c", "uvicorn producers.app:app --host 0.0.0.0 --port ${PORT:-8000} --proxy-headers"]
