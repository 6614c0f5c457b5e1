# syntax=docker/dockerfile:1
# Self-managed Flink image for asset-cycle: official Flink 2.2 (Java 17) + Python 3.12 + PyFlink + the job.
#
# Python choice: the official flink:2.2 images are built FROM eclipse-temurin:17-jre-noble
# (Ubuntu 24.04), whose distro Python is 3.12, the version of MSF's FLINK-2_2 runtime. Installing
# python3.12 from the distro keeps interpreter, shared libraries and security updates consistent
# (no interpreter copied between images, no extra downloader). The build fails fast if a future
# base image ships another Python. PyFlink then lives in a venv (/opt/venv, PEP 668-safe).
#
# Before `docker build .`: `make setup` (or `python -m deploy.jars build`) builds the job's uber-jar
# (java/: Kinesis source, JDBC connector, PostgreSQL driver; every third-party jar pinned by sha256
# in java/dependencies.lock) into .jars/, which COPY below takes (missing = build error).
#
#   docker build -t asset-cycle:0.1.0 .
#   docker build --build-arg FLINK_IMAGE=flink:2.2.1-java17 -t asset-cycle:0.1.0 .   # newer 2.2 patch

ARG FLINK_IMAGE=flink:2.2.0-java17
FROM ${FLINK_IMAGE}

# Must equal the apache-flink pin in pyproject.toml (tests/deploy/test_dockerfile.py checks it).
ARG APACHE_FLINK_VERSION=2.2.1
ARG PYTHON_VERSION=3.12

USER 0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Distro packages float with Ubuntu security updates on purpose (no exact apt pins).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv \
    && /opt/venv/bin/python -c "import sys; v = '%d.%d' % sys.version_info[:2]; assert v == '${PYTHON_VERSION}', v"

ENV PATH=/opt/venv/bin:${PATH} \
    PYFLINK_CLIENT_EXECUTABLE=/opt/venv/bin/python \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/asset-cycle
COPY pyproject.toml README.md ./
COPY job ./job
COPY cli ./cli
COPY stores ./stores
COPY report ./report
COPY web ./web
COPY udfs ./udfs
COPY state_machine ./state_machine
COPY workbench ./workbench
COPY deploy ./deploy
COPY sql ./sql
RUN pip install --no-cache-dir "apache-flink==${APACHE_FLINK_VERSION}" /opt/asset-cycle \
    && python -c "import pyflink, job.main, cli.main, stores, report, web, udfs, state_machine, workbench" \
    && ln -s /opt/flink/opt/flink-python-*.jar /opt/flink/opt/flink-python.jar

# The job's uber-jar on the cluster classpath (the same jar as in the MSF zip).
COPY --chown=9999:9999 .jars/asset-cycle-flink-0.1.0.jar /opt/flink/lib/

WORKDIR /opt/flink
# 9999 = the flink user of the official image
USER 9999
