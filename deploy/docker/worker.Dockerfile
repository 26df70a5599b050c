# syntax=docker/dockerfile:1.7
# lumbar-node GPU worker: Celery on the `gpu` queue running the imaging pipeline with torch
# (CUDA build) and the released model weights baked in, so a worker never downloads anything
# and every pod runs exactly the weights whose sha256 the model cards record.
#
# Build from the repository root (worker.Dockerfile.dockerignore beside this file applies):
#   docker build -f deploy/docker/worker.Dockerfile -t lumbar-node/worker:0.1.0 .
# The torch wheel must match the CUDA runtime of the base image; change both together:
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu 22.04 ships Python 3.10; the project needs 3.11 (deadsnakes builds for this release).
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && apt-get purge -y software-properties-common gpg-agent \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 lumbar \
 && useradd --system --uid 10001 --gid lumbar --home-dir /var/lib/lumbar-node --create-home \
      --shell /usr/sbin/nologin lumbar

# torch first, from the CUDA wheel index, so `pip install .` below finds it satisfied and does
# not pull the CPU wheel from PyPI.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /opt/lumbar-node
COPY pyproject.toml README.md ./
COPY lumbar_common ./lumbar_common
COPY dicom_node ./dicom_node
COPY workers ./workers
COPY migrations ./migrations
COPY models ./models
COPY deploy/docker/verify_weights.py ./verify_weights.py
# models/weights/ (cards + .pt) is package data of `models`: installing bakes the weights in.
# verify_weights.py fails the build when no model is registered or a sha256 does not match.
RUN pip install . \
 && python verify_weights.py \
 && rm -rf /opt/lumbar-node/lumbar_common /opt/lumbar-node/dicom_node /opt/lumbar-node/workers \
      /opt/lumbar-node/migrations /opt/lumbar-node/models

ENV LUMBAR_NODE_DATA_DIR=/var/lib/lumbar-node \
    LUMBAR_NODE_SPOOL_DIR=/var/lib/lumbar-node/spool \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN install -d -o lumbar -g lumbar /var/lib/lumbar-node/spool

USER 10001:10001

# A worker is healthy when its Celery process answers a ping over the broker. The solo pool
# answers only between tasks, so unhealthy means silent for longer than the longest job
# (35 x 60 s > LUMBAR_NODE_JOB_TIME_LIMIT_SECONDS = 1800).
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=35 \
  CMD celery --app workers.celery_app inspect ping --destination "celery@$HOSTNAME" --timeout 5

ENTRYPOINT ["lumbar-node"]
CMD ["worker", "--queues", "gpu"]
