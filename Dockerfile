# syntax=docker/dockerfile:1
# One image for every process of the service; compose.yaml (or your orchestrator) picks the command:
#   python -m app                                    the API (default)
#   python -m workers.main [-n N] [-q QUEUES]        a worker pool (what start_worker.sh runs)
#   python -m workers.scheduler                      rq-scheduler: the periodic reconciler
#   alembic upgrade head                             migrations, once per release, before the rest
# The base is pinned by tag and by digest (the multi-arch index); to move to a newer patch release:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (then update tag and digest together)
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md redis_client.py ./
COPY back-end ./back-end
COPY core ./core
COPY devserver ./devserver
COPY jobs ./jobs
COPY tasks ./tasks
COPY workers ./workers
# Every dependency ships a wheel (numpy, psycopg[binary], and soundfile with libsndfile inside it):
# no compiler and no Debian package is needed, in this stage or the next.
RUN python -m venv /opt/audiokit \
    && /opt/audiokit/bin/pip install --no-cache-dir ".[postgres]"

FROM ${PYTHON_IMAGE}
# PYTHONSAFEPATH: packages come from the virtualenv only, never from the working directory.
# The rest are defaults fit for a container; every other setting comes from the environment (.env.example).
ENV PATH=/opt/audiokit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    STORAGE_DIR=/data/uploads \
    DATABASE_URL=sqlite:////data/audiokit.db \
    REDIS_DATA_DIR=/data/redis
RUN groupadd --system --gid 10001 audiokit \
    && useradd --system --uid 10001 --gid audiokit --home-dir /srv/audiokit --shell /usr/sbin/nologin audiokit \
    && install -d -o audiokit -g audiokit -m 0750 /data /data/uploads
COPY --from=build /opt/audiokit /opt/audiokit
WORKDIR /srv/audiokit
COPY alembic.ini ./
COPY migrations ./migrations
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# SIGTERM is the warm shutdown everywhere: uvicorn drains requests; a worker pool finishes its jobs.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app"]
