# The worker image built here without a registry (scripts/images.sh worker): the locally built base and
# a binary built on this machine (same Debian release, so the same glibc). The production image is
# docker/Dockerfile's `worker` target.
ARG BASE=cspm-base:bookworm
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini nmap \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/cspm/output
COPY cspm-worker /usr/local/bin/cspm-worker
USER 10001:10001
ENV CSPM_LOG_FORMAT=json CSPM_WORKER_BIND=0.0.0.0:9091 CSPM_WORKER_OUTPUT_DIR=/var/lib/cspm/output
EXPOSE 9091
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/cspm-worker"]
