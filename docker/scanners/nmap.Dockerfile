# nmap for the Docker runner, on the locally built Debian base (scripts/images.sh).
# The runner chooses the user (the worker's uid) and drops every capability: nmap runs TCP connect
# scans (-sT), which need no privilege.
ARG BASE=cspm-base:bookworm
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends nmap \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
ENTRYPOINT ["nmap"]
