FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Code and installed packages belong to root and are read-only for the service user: a compromised
# process cannot rewrite the service. The config directory is mounted read-only by docker-compose.yml.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producers ./producers
COPY admin ./admin
COPY wetbot_rewards ./wetbot_rewards
COPY config ./config
COPY simulator ./simulator
RUN pip install . \
    && chmod -R go-w /app \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin wetbot
USER wetbot

EXPOSE 8000
# docker-compose.yml runs the same image twice: web (this default) and worker (python -m worker ...).
CMD ["sh", "-c", "exec uvicorn wetbot_rewards.app:app --host 0.0.0.0 --port ${PORT:-8000} --proxy-headers"]
