# Lead Bridge container image.
#
#   docker build -t lead-bridge .
#   docker run -v ./config.yaml:/etc/lead-bridge/config.yaml:ro -v lb-data:/var/lib/lead-bridge \
#       -p 8443:8443 lead-bridge
#
# The base image is a build argument so CI (and air-gapped builders) can use a
# locally built Debian base with python3 + python3-venv instead of pulling one.
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------- build: a venv with the app
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# `python3`, not `python`: Debian's own images have only the former.
RUN python3 -m venv /opt/lead-bridge
WORKDIR /src
# Which extras to install: all (Salesforce, HubSpot, PostgreSQL) by default;
# e.g. --build-arg EXTRAS=postgres for a leaner image without the CRM SDKs.
ARG EXTRAS=all
# Dependencies first so source edits do not reinstall them (layer cache): the
# base list plus each extra named by EXTRAS (`all` names the others).
COPY pyproject.toml ./
RUN EXTRAS="$EXTRAS" /opt/lead-bridge/bin/python3 -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; names = [n.strip() for n in os.environ['EXTRAS'].split(',') if n.strip()]; names = [m for n in names for m in (x[n][0].split('[', 1)[1].rstrip(']').split(',') if n == 'all' else [n])]; print('\n'.join(p['dependencies'] + [r for n in names for r in x[n]]))" > /tmp/requirements.txt \
    && /opt/lead-bridge/bin/pip install -r /tmp/requirements.txt
# .dockerignore lets only pyproject.toml, README.md, LICENSE, bridge/ and connectors/ in.
COPY . ./
RUN /opt/lead-bridge/bin/pip install ".[${EXTRAS}]" \
    && /opt/lead-bridge/bin/lead-bridge --version

# ---------------------------------------------------------------- runtime: venv + non-root user
FROM ${BASE_IMAGE}
ENV PATH=/opt/lead-bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEAD_BRIDGE_CONFIG=/etc/lead-bridge/config.yaml \
    LEAD_BRIDGE_HEALTHCHECK_URL=https://127.0.0.1:8443/healthz
RUN groupadd --gid 10001 lead-bridge \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/lead-bridge --shell /usr/sbin/nologin lead-bridge \
    && mkdir -p /etc/lead-bridge /var/lib/lead-bridge \
    && chown lead-bridge:lead-bridge /var/lib/lead-bridge
COPY --from=build /opt/lead-bridge /opt/lead-bridge
USER 10001:10001
WORKDIR /var/lib/lead-bridge
# SQLite database, self-signed certificates, JSON-lines output.
VOLUME /var/lib/lead-bridge
EXPOSE 8443
# No curl in slim images: python's urllib, certificate unchecked because the
# endpoint may use a self-signed certificate. Behind a TLS-terminating proxy set
# LEAD_BRIDGE_HEALTHCHECK_URL=http://127.0.0.1:8443/healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['LEAD_BRIDGE_HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context())"]
ENTRYPOINT ["lead-bridge"]
CMD ["serve", "--config", "/etc/lead-bridge/config.yaml"]
