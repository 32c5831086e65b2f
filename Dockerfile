# magbridge: one image for `web`, `worker` and `run` (the command selects; default `run`).
#
#   docker build -t magbridge .
#   docker run --rm --read-only --cap-drop ALL -e MAGBRIDGE_REDIS_URL=redis://:PASSWORD@redis:6379/0 \
#       -e MAGBRIDGE_WEBHOOK_SECRET=... magbridge web
#
# Build stage: a virtualenv with magbridge and exactly the versions CI tested (constraints.txt; all
# binary wheels: no compiler). Final stage: that virtualenv on the same slim Python, run as an
# unprivileged user, no pip.
#
# The base is pinned by digest (an OCI index: every architecture), so a rebuild gets the same
# Python and Debian. To move it: `docker buildx imagetools inspect python:3.11-slim-bookworm`, put
# the new digest here, build, run the tests (docs/deployment.md, "The image").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/magbridge
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY config/ config/
COPY bridge/ bridge/
COPY workers/ workers/
# -c constraints.txt: the container runs the versions the tests ran, not whatever is newest today;
# `pip check` fails the build on a broken set. Compiled once here, because the runtime user cannot
# write __pycache__ (and need not).
RUN /opt/magbridge/bin/pip install -c constraints.txt . \
    && /opt/magbridge/bin/pip check \
    && /opt/magbridge/bin/pip uninstall --yes pip setuptools \
    && /opt/magbridge/bin/python -m compileall -q /opt/magbridge/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="magbridge" \
      org.opencontainers.image.description="Event bridge between Magnews, Magnify and MagicBell"
# No package manager for Python at run time, and a fixed unprivileged user (uid 10001) that
# Kubernetes can check with runAsNonRoot.
RUN PIP_ROOT_USER_ACTION=ignore python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 magbridge \
    && useradd --system --uid 10001 --gid magbridge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin magbridge
COPY --from=build /opt/magbridge /opt/magbridge
ENV PATH=/opt/magbridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAGBRIDGE_HOST=0.0.0.0 \
    MAGBRIDGE_PORT=8080 \
    MAGBRIDGE_LOG_FORMAT=json \
    MAGBRIDGE_WORKER_PROBES=true
# Nothing is written at run time: the root filesystem can be read-only (compose `read_only`,
# Kubernetes `readOnlyRootFilesystem`).
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# web, worker and run all answer /healthz on MAGBRIDGE_PORT (the worker because of WORKER_PROBES).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MAGBRIDGE_PORT', '8080') + '/healthz', timeout=2)"]
# Exec form: magbridge is PID 1 and gets SIGTERM itself; it drains (see docs/guarantees.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["magbridge"]
CMD ["run"]
