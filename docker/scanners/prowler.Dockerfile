# Prowler for the Docker runner: scripts/images.sh downloads Prowler and its dependencies as wheels
# (PyPI) into the build context, installed here into a virtual environment without network access.
# Large (about 2.5 GB). Production pulls prowlercloud/prowler instead (CSPM_DOCKER_IMAGE_PROWLER).
ARG BASE=cspm-base:bookworm
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/prowler \
    && /opt/prowler/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels prowler \
    && rm -rf /tmp/wheels \
    && ln -s /opt/prowler/bin/prowler /usr/local/bin/prowler \
    && prowler --version
USER 10001:10001
ENTRYPOINT ["prowler"]
