# One image for every lastseen service; docker-compose.yml picks each service's command.

FROM python:3.11-slim AS build
WORKDIR /src
# Dependencies first, pinned by constraints.txt, in a layer that only pyproject.toml and
# constraints.txt invalidate: a code change rebuilds just the project's own wheel. With them the
# extra "pubsub" (Google's client): the services import it for BROKER=pubsub, and its settings
# module for either broker.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['pubsub']))" > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt -r requirements.txt
COPY README.md ./
COPY common ./common
COPY producer ./producer
COPY consumer ./consumer
COPY routine ./routine
COPY tester ./tester
COPY liveview ./liveview
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
RUN groupadd --gid 10001 lastseen \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lastseen \
    && install -d -o lastseen -g lastseen /var/lib/lastseen /var/lib/lastseen/spool
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# Numeric, so a kubelet enforcing runAsNonRoot can see the user is not root without a runAsUser.
USER 10001:10001
WORKDIR /var/lib/lastseen
# HTTP services set HEALTHCHECK_URL; the others prove a live event loop with a heartbeat file.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "common.healthcheck"]
CMD ["python", "-m", "producer"]
