# Wapiti (web scans) for the Docker runner, from Debian.
ARG BASE=cspm-base:bookworm
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends wapiti \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
ENTRYPOINT ["wapiti"]
