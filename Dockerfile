# syntax=docker/dockerfile:1
# One image for every role (api, worker per queue, beat, migrate); the command picks the role.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Fonts for Decree 30 signature appearances (Times metrics, full Vietnamese), poppler for
# rendering checks, curl for health checks; libpq is not needed (psycopg[binary]).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-texgyre poppler-utils curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv

WORKDIR /app
# Dependencies first (cached layer), exactly as locked; then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY eoffice ./eoffice
COPY workers ./workers
COPY migrations ./migrations
COPY alembic.ini ./
COPY certs ./certs
RUN uv sync --frozen --no-dev

RUN useradd --system --uid 10001 --home-dir /var/lib/eoffice --create-home eoffice \
 && mkdir -p /var/lib/eoffice && chown -R eoffice /var/lib/eoffice
USER eoffice
ENV EOFFICE_DATA_DIR=/var/lib/eoffice \
    EOFFICE_ENVIRONMENT=production \
    EOFFICE_LOG_JSON=true
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1

CMD ["uvicorn", "--factory", "eoffice.app:app_factory", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--forwarded-allow-ips", "*", "--no-access-log"]
