# modelctl/modelctl:local: the controller and the gateway (one image, `modelctl <command>`).
#
# Installs from wheels built on the host into build/wheels, so the build needs no network:
#   scripts/build-images.sh modelctl/modelctl:local
# (it runs `pip wheel --wheel-dir build/wheels .` first; .dockerignore sends only build/wheels).
# Host Python and Debian bookworm's are both 3.11, so the host's cp311 manylinux wheels install.
#
# Runs as root: the controller talks to /var/run/docker.sock, which is root's. The gateway needs
# no socket and may run as any user (`user:` in compose).
ARG BASE=modelctl/base:bookworm

FROM ${BASE} AS venv
COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/modelctl \
 && /opt/modelctl/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /tmp/wheels modelctl \
 && { /opt/modelctl/bin/modelctl --help >/dev/null 2>&1 \
      || /opt/modelctl/bin/python -c 'import controller'; }

# The wheels stay in the first stage; only the venv (same path, same Python) is copied.
FROM ${BASE}
ARG BASE
LABEL org.opencontainers.image.title="modelctl" \
      org.opencontainers.image.description="Declarative LLM inference servers behind one OpenAI-compatible endpoint" \
      org.opencontainers.image.base.name="${BASE}"
COPY --from=venv /opt/modelctl /opt/modelctl
ENV PATH=/opt/modelctl/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT [ "tini", "--", "modelctl" ]
