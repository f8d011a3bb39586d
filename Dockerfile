# syntax=docker/dockerfile:1
# The service's one image: the API by default; docker-compose.yml runs the worker and the
# migrations from the same image with other commands (docs/api.md's process commands).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json

WORKDIR /app

# A fixed, unprivileged user; it owns only ./var, not the code.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/var \
    && chown app:app /app/var

# Dependencies in their own layer: rebuilt only when the lock changes, not on every code edit.
# Exactly the versions of uv.lock (the ones the tests ran against), checked against its hashes.
COPY pyproject.toml uv.lock ./
RUN pip install uv==0.13.8 \
    && uv export --frozen --no-dev --no-emit-project --format requirements.txt \
        -o /tmp/requirements.txt \
    && pip install --require-hashes --no-deps -r /tmp/requirements.txt \
    && pip uninstall -y uv \
    && rm /tmp/requirements.txt

# The code last. It runs from /app (PYTHONPATH), which is where alembic.ini and `python -m app`
# expect the repository root to be.
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app

USER app

EXPOSE 8000

# The slim image has no curl: ask /healthz with the standard library (urlopen raises on non-2xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# --http: uvicorn's protocol with deadlines for headers and bodies (app/web/edge.py).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--http", "app.web.edge:GuardedHttpToolsProtocol"]
