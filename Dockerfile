# syntax=docker/dockerfile:1.7
# ganforge's images, one multi-stage build:
#   docker build --target operator -t ganforge/operator:dev .   # the kopf operator, no torch
#   docker build --target trainer  -t ganforge/trainer:dev  .   # training, export, analysis
# Both run as the non-root user 65532 with a read-only root filesystem: the only writable paths
# are volumes (/tmp as an emptyDir, the checkpoint and model repository claims). Versions are
# pinned: the base image by tag, Python packages by images/constraints.txt.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN groupadd --gid 65532 ganforge \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ganforge

# The project as a wheel; nothing of the build stage reaches the images but the wheel.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ganforge ./ganforge
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM base AS operator
COPY images/constraints.txt /tmp/constraints.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --constraint /tmp/constraints.txt /wheels/ganforge-*.whl && rm /tmp/constraints.txt
USER 65532:65532
ENTRYPOINT ["ganforge", "operator"]

# The trainer image also runs export pods, the model preparation step of Triton pods, and the
# canary's analysis pods (their commands name `ganforge export|prepare-model|analyze`).
FROM base AS trainer
COPY images/constraints.txt /tmp/constraints.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --constraint /tmp/constraints.txt "$(ls /wheels/ganforge-*.whl)[trainer]" && rm /tmp/constraints.txt
USER 65532:65532
ENTRYPOINT ["ganforge", "train"]
