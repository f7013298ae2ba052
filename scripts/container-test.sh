#!/usr/bin/env bash
# Build the container image from the Dockerfile and run it for real:
# mounted config + TLS certificate, the provider's curl example over HTTPS,
# 200 expected, the process must not run as root, the lead must come out of the
# JSON-lines destination, the HEALTHCHECK must pass. Then each compose file's
# config is checked inside the image with exactly the variables and mounts the
# compose file passes (`check-config`), and compose/single.yaml is brought up
# with podman-compose (from PyPI) and the provider's curl example posted through
# it. Removes what it created.
#
# Runs as root on a clean Debian bookworm machine with only package registries
# reachable (no Docker engine, no container registry): podman + a base image
# built locally from Debian packages (see docs/operations.md, "CI").
#
#   scripts/container-test.sh            # from the repository root
#   LB_CI_CACHE=/var/cache/lead-bridge-ci  where the base image tarball is kept
#   LB_CI_RESET=1                         also remove the base image afterwards
#   LB_CI_COMPOSE=0                       skip the podman-compose step
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${LB_CI_CACHE:-/var/cache/lead-bridge-ci}
BASE_IMAGE=localhost/lead-bridge-base:bookworm
IMAGE=localhost/lead-bridge:ci
NAME=lead-bridge-ci-$$
WORK=$(mktemp -d /tmp/lead-bridge-ci.XXXXXX)
SECRET=ci-secret-$$-$RANDOM
LEAD_ID=led_slp3mt0qxvIXYUIK
COMPOSE_IMAGE=localhost/lead-bridge:latest  # what compose/*.yaml name (lead-bridge:latest)
COMPOSE_UP=0
STEP=setup
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python  # compose_env.py needs PyYAML

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED at step "%s": %s\n' "$STEP" "$*" >&2; exit 1; }

cleanup() {
    local status=$?
    set +e  # clean up as much as possible; the exit status is the script's own
    if [ "$status" -ne 0 ] && podman container exists "$NAME" 2>/dev/null; then
        echo "--- container logs (last 40 lines) ---" >&2
        podman logs --tail 40 "$NAME" >&2 || true
    fi
    podman rm -f -v "$NAME" >/dev/null 2>&1 || true
    if [ "$COMPOSE_UP" = 1 ]; then
        if [ "$status" -ne 0 ]; then
            echo "--- compose logs (last 40 lines) ---" >&2
            podman logs --tail 40 lead-bridge_lead-bridge_1 >&2 || true
        fi
        "$PODMAN_COMPOSE" -f compose/single.yaml --env-file "$WORK/compose.env" down -v \
            >/dev/null 2>&1 || true
    fi
    # (untag with the name: without one, podman removes every name of the image)
    if [ "${COMPOSE_TAGGED:-0}" = 1 ]; then
        podman untag "$COMPOSE_IMAGE" "$COMPOSE_IMAGE" >/dev/null 2>&1
    fi
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
    # The build also leaves the build stage and cached layers behind, untagged
    # (~470 MB): remove every image that did not exist before this run.
    if [ -n "${IMAGES_BEFORE+set}" ]; then
        local id
        for id in $(podman images -a -q --no-trunc 2>/dev/null); do
            grep -qxF "$id" <<<"$IMAGES_BEFORE" || podman rmi -f "$id" >/dev/null 2>&1 || true
        done
    fi
    if [ "${LB_CI_RESET:-0}" = 1 ]; then podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "run as root (podman without a rootless setup)"

# ------------------------------------------------------------------ tools
STEP=tools
missing=()
for tool in podman buildah runc mmdebstrap openssl curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap openssl curl >/dev/null
fi

# Why each setting: crun fails on this host's hybrid cgroups (runc works); the
# hard RLIMIT_NOFILE cannot be raised, so keep the current one; the host CA
# bundle makes pip's HTTPS work during the build; host networking keeps the
# test traffic on loopback.
HARD_NOFILE=$(ulimit -Hn)
cat >"$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${HARD_NOFILE}:${HARD_NOFILE}", "nproc=32768:32768"]
netns = "host"
volumes = ["/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"

# ------------------------------------------------------------------ base image
STEP=base-image
if podman image exists "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE already present"
else
    mkdir -p "$CACHE"
    TARBALL="$CACHE/base-bookworm.tar"
    if [ ! -s "$TARBALL" ]; then
        say "building the base root filesystem with mmdebstrap (about a minute)"
        MIRROR=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
        # write to a temporary name ending in .tar (mmdebstrap picks the format from it)
        mmdebstrap --quiet --variant=minbase --format=tar \
            --include=python3,python3-venv,ca-certificates \
            bookworm "$CACHE/base-bookworm.partial.tar" "$MIRROR"
        mv "$CACHE/base-bookworm.partial.tar" "$TARBALL"
    fi
    say "importing $TARBALL as $BASE_IMAGE"
    podman import --quiet --change 'CMD ["/bin/bash"]' "$TARBALL" "$BASE_IMAGE" >/dev/null
fi

# ------------------------------------------------------------------ build
STEP=build
IMAGES_BEFORE=$(podman images -a -q --no-trunc)
say "building $IMAGE from the Dockerfile (BASE_IMAGE=$BASE_IMAGE)"
# docker format: the OCI format drops HEALTHCHECK
podman build --quiet --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" . >/dev/null
podman image inspect "$IMAGE" --format '{{.Config.User}} {{.Config.Entrypoint}} {{.Config.Cmd}}'

# ------------------------------------------------------------------ config + certificate
STEP=config
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/etc"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/etc/key.pem" -out "$WORK/etc/cert.pem" 2>/dev/null
chmod 0644 "$WORK/etc/key.pem" "$WORK/etc/cert.pem"  # readable by the container's uid 10001
cat >"$WORK/etc/config.yaml" <<YAML
server:
  port: ${PORT}
  tls:
    certfile: /etc/lead-bridge/cert.pem
    keyfile: /etc/lead-bridge/key.pem
auth:
  header_secrets: ["\${WEBHOOK_SECRET}"]
storage:
  url: sqlite:////var/lib/lead-bridge/lead-bridge.db
destinations:
  - name: archive
    type: jsonl
    settings:
      path: /var/lib/lead-bridge/leads.jsonl
YAML

# ------------------------------------------------------------------ run
STEP=run
say "starting $NAME on https://127.0.0.1:$PORT"
podman run -d --name "$NAME" \
    -v "$WORK/etc:/etc/lead-bridge:ro" \
    -e "WEBHOOK_SECRET=$SECRET" \
    -e "LEAD_BRIDGE_HEALTHCHECK_URL=https://127.0.0.1:$PORT/healthz" \
    "$IMAGE" >/dev/null 2>"$WORK/run.err" || { cat "$WORK/run.err" >&2; fail "podman run failed"; }
# (podman complains on stderr that it cannot schedule healthcheck timers without
# systemd; the HEALTHCHECK itself is run explicitly below.)
for _ in $(seq 1 60); do
    if curl -fsS --cacert "$WORK/etc/cert.pem" "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
        break
    fi
    [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container exited"
    sleep 1
done
curl -fsS --cacert "$WORK/etc/cert.pem" "https://127.0.0.1:$PORT/healthz" >/dev/null \
    || fail "/healthz did not answer within 60 s"

# ------------------------------------------------------------------ the provider's curl example
STEP=webhook
say "posting the provider's curl example over HTTPS"
STATUS=$(curl -sS -o "$WORK/response.json" -w '%{http_code}' --cacert "$WORK/etc/cert.pem" \
    -X POST "https://127.0.0.1:$PORT/lead/webhook" \
    -H 'Content-Type: application/json' \
    -H "Authorization: $SECRET" \
    -d '[{
  "id": "led_slp3mt0qxvIXYUIK",
  "url": "https://some-site.com/page-with-lead-form/",
  "created": "2018-07-12T16:29:42Z",
  "data": {
    "first_name": "John",
    "middle_name": "",
    "last_name": "Doe",
    "phone": "+123123123123123",
    "position": "Agent",
    "email": "sergunich@gmail.com",
    "state": "Georgia",
    "organization_name": "Org",
    "organization_size": "101-250",
    "organization_country": "United States",
    "organization_state": "Alabama",
    "organization_city": "Montgomery",
    "interested_in": "I would like information for my department"
  }
}]')
echo "HTTP $STATUS $(cat "$WORK/response.json")"
[ "$STATUS" = 200 ] || fail "expected HTTP 200, got $STATUS"

STEP=wrong-secret
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$WORK/etc/cert.pem" \
    -X POST "https://127.0.0.1:$PORT/lead/webhook" -H 'Authorization: wrong' -d '[]')
echo "wrong secret -> HTTP $STATUS"
[ "$STATUS" = 401 ] || [ "$STATUS" = 403 ] || fail "a wrong secret answered $STATUS"

# ------------------------------------------------------------------ non-root, delivery, healthcheck
STEP=non-root
USER_ID=$(podman exec "$NAME" id -u)
echo "container process uid: $USER_ID"
[ "$USER_ID" != 0 ] || fail "the container runs as root"
SERVE_UID=$(podman top "$NAME" user | awk 'NR == 2 { print $1 }')
echo "lead-bridge serve runs as: $SERVE_UID"
[ "$SERVE_UID" != root ] || fail "lead-bridge serve runs as root"

STEP=delivery
for _ in $(seq 1 30); do
    if podman exec "$NAME" grep -q "$LEAD_ID" /var/lib/lead-bridge/leads.jsonl 2>/dev/null; then
        break
    fi
    sleep 1
done
podman exec "$NAME" grep -q "$LEAD_ID" /var/lib/lead-bridge/leads.jsonl \
    || fail "the lead did not reach the jsonl destination within 30 s"
echo "lead $LEAD_ID delivered to /var/lib/lead-bridge/leads.jsonl"

STEP=healthcheck
podman healthcheck run "$NAME" || fail "the image's HEALTHCHECK failed"
echo "HEALTHCHECK: healthy"

# ------------------------------------------------------------------ compose configs, inside the image
# Each compose file's config with exactly the variables and bind mounts the
# compose file passes (a user's compose/.env filled in): a variable the config
# uses but the compose file does not pass fails here as it would in production.
for compose_file in compose/single.yaml compose/caddy.yaml; do
    STEP="check-config $compose_file"
    say "check-config inside the image with what $compose_file passes"
    mapfile -t ARGS < <("$PY" scripts/compose_env.py "$compose_file" \
        --env-file compose/.env.example --fill --podman) || fail "reading $compose_file"
    podman run --rm --no-healthcheck "${ARGS[@]}" "$IMAGE" check-config \
        || fail "check-config fails with the environment $compose_file passes"
done

# ------------------------------------------------------------------ podman-compose up compose/single.yaml
STEP=compose-up
COMPOSE_RESULT="podman-compose step skipped"
if [ "${LB_CI_COMPOSE:-1}" = 0 ]; then
    say "podman-compose step skipped (LB_CI_COMPOSE=0)"
elif python3 -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 8443))' 2>/dev/null; then
    PODMAN_COMPOSE="$CACHE/podman-compose/bin/podman-compose"
    if [ ! -x "$PODMAN_COMPOSE" ]; then
        say "installing podman-compose (PyPI) into $CACHE/podman-compose"
        python3 -m venv "$CACHE/podman-compose"
        "$CACHE/podman-compose/bin/pip" install -q --disable-pip-version-check podman-compose
    fi
    podman image exists "$COMPOSE_IMAGE" && fail "$COMPOSE_IMAGE exists already; not overwriting it"
    podman tag "$IMAGE" "$COMPOSE_IMAGE" && COMPOSE_TAGGED=1
    "$PY" scripts/compose_env.py compose/single.yaml --env-file compose/.env.example --fill \
        --print-env-file >"$WORK/compose.env"
    COMPOSE_SECRET=$(sed -n 's/^WEBHOOK_SECRET=//p' "$WORK/compose.env")
    say "podman-compose -f compose/single.yaml up (the image just built)"
    COMPOSE_UP=1
    "$PODMAN_COMPOSE" -f compose/single.yaml --env-file "$WORK/compose.env" up -d --no-build \
        >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log" >&2; fail "podman-compose up"; }
    # The self-signed certificate is made on first start, in the data volume:
    # trust exactly it (the comment at the top of compose/single.yaml says how).
    for _ in $(seq 1 120); do
        podman cp lead-bridge_lead-bridge_1:/var/lib/lead-bridge/tls/cert.pem "$WORK/compose-cert.pem" \
            2>/dev/null && curl -fsS --cacert "$WORK/compose-cert.pem" https://localhost:8443/healthz \
            >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS --cacert "$WORK/compose-cert.pem" https://localhost:8443/healthz >/dev/null \
        || fail "compose/single.yaml: /healthz did not answer within 120 s"
    say "posting the provider's curl example through compose/single.yaml"
    STATUS=$(curl -sS -o "$WORK/compose-response.json" -w '%{http_code}' \
        --cacert "$WORK/compose-cert.pem" -X POST https://localhost:8443/lead/webhook \
        -H 'Content-Type: application/json' -H "Authorization: $COMPOSE_SECRET" \
        -d @tests/fixtures/seed_curl_body.json)
    echo "HTTP $STATUS $(cat "$WORK/compose-response.json")"
    [ "$STATUS" = 200 ] || fail "compose/single.yaml answered $STATUS"
    for _ in $(seq 1 60); do
        podman exec lead-bridge_lead-bridge_1 grep -q "$LEAD_ID" /var/lib/lead-bridge/leads.jsonl \
            2>/dev/null && break
        sleep 1
    done
    podman exec lead-bridge_lead-bridge_1 grep -q "$LEAD_ID" /var/lib/lead-bridge/leads.jsonl \
        || fail "the lead did not reach compose/single.yaml's archive within 60 s"
    echo "lead $LEAD_ID delivered through compose/single.yaml"
    COMPOSE_RESULT="compose/single.yaml up and delivering"
else
    say "podman-compose step SKIPPED: port 8443 (compose/single.yaml's) is in use on this host"
fi

STEP=done
say "container test passed: built from Dockerfile, HTTPS webhook 200, uid $USER_ID, delivered, healthy; compose configs OK; $COMPOSE_RESULT"
