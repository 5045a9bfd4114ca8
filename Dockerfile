# igw: one image for the gateway, the agent and analytics (the command picks the process).
#   docker build -t igw .
#   docker run -p 8080:8080 -e KAFKA_BOOTSTRAP_SERVERS=... -e INSTAGRAM_APP_SECRET_FILE=... igw
# Installs the fast, redis and yaml extras; never the local test broker.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer: rebuilt only when setup.cfg changes, not on every code change.
COPY setup.cfg pyproject.toml ./
COPY scripts/docker-requirements.py scripts/
RUN python scripts/docker-requirements.py setup.cfg fast redis yaml > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the code itself, without touching the dependencies again.
# README.md is optional (the pattern matches nothing when it is absent; setup.cfg keeps the COPY valid).
COPY setup.cfg README.m[d] ./
COPY igw/ igw/
COPY igw_tools/ igw_tools/
COPY gateway/ gateway/
COPY consumers/ consumers/
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib


FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IGW_LOG_FORMAT=json \
    IGW_SPOOL_DIR=/var/lib/igw/spool
RUN groupadd --system --gid 10001 igw \
    && useradd --system --uid 10001 --gid igw --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin igw \
    && mkdir -p /var/lib/igw/spool && chown -R 10001:10001 /var/lib/igw
# The gateway's spool of webhooks taken while Kafka is away: mount a volume here (docs/durability.md).
VOLUME ["/var/lib/igw/spool"]
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
# A numeric user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# The gateway's /healthz; the agent and analytics pass their own URL (see deploy/docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "igw_tools.healthcheck"]
# Exec form: igw is PID 1 and gets SIGTERM itself, so it drains in-flight webhooks before exiting.
CMD ["igw", "gateway", "--host", "0.0.0.0", "--port", "8080"]
