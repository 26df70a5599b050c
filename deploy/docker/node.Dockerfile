# syntax=docker/dockerfile:1.7
# lumbar-node: DICOM C-STORE SCP + HTTP (STOW-RS/QIDO-RS/WADO-RS, /metrics, /healthz), the
# `db upgrade` job and the io (delivery) Celery worker. No torch, no monai, no GPU: the node
# process never imports the imaging stack, so this image stays small and starts fast.
#
# Build from the repository root (node.Dockerfile.dockerignore beside this file applies):
#   docker build -f deploy/docker/node.Dockerfile -t lumbar-node/node:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 lumbar \
 && useradd --system --uid 10001 --gid lumbar --home-dir /var/lib/lumbar-node --create-home \
      --shell /usr/sbin/nologin lumbar

WORKDIR /opt/lumbar-node

# Dependencies first, in their own layer: they change far less often than the code.
COPY deploy/requirements-node.txt ./requirements-node.txt
RUN pip install -r requirements-node.txt

# The project without its declared dependencies (those include torch/monai for the workers).
# models/ is deliberately not copied: the node and the io worker must run without it.
COPY pyproject.toml README.md ./
COPY lumbar_common ./lumbar_common
COPY dicom_node ./dicom_node
COPY workers ./workers
COPY migrations ./migrations
COPY deploy/docker/node_healthcheck.py ./node_healthcheck.py
RUN pip install --no-deps . \
 && rm -rf /opt/lumbar-node/lumbar_common /opt/lumbar-node/dicom_node \
      /opt/lumbar-node/workers /opt/lumbar-node/migrations \
 && python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
 && lumbar-node --help >/dev/null

ENV LUMBAR_NODE_DATA_DIR=/var/lib/lumbar-node \
    LUMBAR_NODE_SPOOL_DIR=/var/lib/lumbar-node/spool \
    LUMBAR_NODE_DIMSE_PORT=11112 \
    LUMBAR_NODE_HTTP_PORT=8080
RUN install -d -o lumbar -g lumbar /var/lib/lumbar-node/spool
VOLUME ["/var/lib/lumbar-node"]

USER 10001:10001
EXPOSE 11112 8080

# /healthz of the HTTP server (HTTPS when TLS is on); the io worker overrides this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/opt/lumbar-node/node_healthcheck.py"]

ENTRYPOINT ["lumbar-node"]
CMD ["serve"]
