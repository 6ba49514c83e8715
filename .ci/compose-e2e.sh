#!/usr/bin/env bash
# End-to-end run of the compose stack on a Docker engine of its own: build the images,
# `docker compose up --wait`, send events and recommendations through the published port, check
# that Prometheus scrapes the api, and tear everything down on exit, whatever happened.
#
# This machine cannot pull images, so the base images the project names (python:3.11-slim,
# redis:7.2, prom/prometheus:v2.42.0) are replaced by local stand-ins built with
# ../shared/tools/standin-images.sh; the project's Dockerfiles and compose file are unchanged.
# Needs root (dockerd, debootstrap). Called by .ci/run; also runs alone: bash .ci/compose-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
started=$(date +%s)
phase() { echo "compose-e2e: $* ($(($(date +%s) - started)) s)"; }

STANDIN_TOOL=${STANDIN_TOOL:-../shared/tools/standin-images.sh}
[ -f "$STANDIN_TOOL" ] || { echo "compose-e2e: $STANDIN_TOOL not found (set STANDIN_TOOL)" >&2; exit 2; }
apt_install dockerd:docker.io docker:docker.io
ci_tools

work=$(mktemp -d /tmp/cosrec-e2e.XXXXXX)
export DOCKER_HOST="unix://$work/docker.sock"
export COMPOSE_PROJECT_NAME=cosrec-e2e
COSREC_PORT=$(free_port)
PROMETHEUS_PORT=$(free_port)
export COSREC_PORT PROMETHEUS_PORT
export COSREC_TRAIN_EPOCHS=${COSREC_TRAIN_EPOCHS:-1}
# the retrain loop, short: a cycle every 10 s, every candidate promoted (the mechanics are
# checked here; the gate has its own tests)
export COSREC_RETRAIN_EVERY=10s COSREC_RETRAIN_POLL=3s COSREC_RETRAIN_EPOCHS=1 COSREC_RETRAIN_TOLERANCE=1
unset COSREC_API_KEY COSREC_TRAIN_DATA COSREC_DATA_DIR
wheel_added=""
standins_pid=""

cleanup() {
  local status=$?
  set +e
  [ -n "$standins_pid" ] && kill "$standins_pid" 2>/dev/null && wait "$standins_pid"
  if [ -S "$work/docker.sock" ]; then
    if [ "$status" != 0 ]; then
      docker compose ps -a
      docker compose logs --no-color --tail 60
    fi
    docker compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
  fi
  if [ -f "$work/dockerd.pid" ]; then
    local pid
    pid=$(cat "$work/dockerd.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  [ -n "$wheel_added" ] && rm -f "$wheel_added"
  rm -rf "$work"
  echo "compose-e2e: $([ "$status" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s"
  exit "$status"
}
trap cleanup EXIT

setsid dockerd --data-root "$work/data" --exec-root "$work/exec" -H "$DOCKER_HOST" \
  --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 < /dev/null &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; exit 1; }

phase "engine up; building stand-in base images"
# Stand-ins for every public base image the Dockerfiles and the started services name.
python_base=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile.api docker/Dockerfile.train | sort -u)
mapfile -t service_images < <(docker compose config --images | grep -E '^(redis|prom/prometheus):')
bash "$STANDIN_TOOL" $python_base
# The project's images need only the Python base: build them while the other stand-ins are made.
bash "$STANDIN_TOOL" "${service_images[@]}" &
standins_pid=$!

# The CPU torch wheel from local disk, so the trainer image needs no torch index.
if ! ls docker/wheels/torch-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps -d docker/wheels "torch==2.13.0"
  wheel_added=$(ls docker/wheels/torch-*.whl)
fi

phase "building the project's images"
docker compose build -q
wait "$standins_pid"
standins_pid=""
phase "up --wait (trainer: $COSREC_TRAIN_EPOCHS epochs on generated data; the retrain loop on)"
docker compose --profile loop up -d --wait --wait-timeout 600
docker compose ps
phase "stack healthy; checking it"

# The api runs as a non-root user and its image has no torch.
api_uid=$(docker compose exec -T api id -u)
[ "$api_uid" != 0 ] || { echo "compose-e2e: the api runs as root" >&2; exit 1; }
docker compose exec -T api python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)' \
  || { echo "compose-e2e: torch is installed in the api image" >&2; exit 1; }

docker compose cp api:/bundles/current/manifest.json "$work/manifest.json"
python3 .ci/e2e_check.py --api "http://127.0.0.1:$COSREC_PORT" \
  --prometheus "http://127.0.0.1:$PROMETHEUS_PORT" --manifest "$work/manifest.json" \
  --loop-out "$work/promoted"
# One full loop cycle: the api now serves the bundle the registry's pointer names.
serving=$(docker compose exec -T api readlink /bundles/current)
[ "$serving" = "$(cat "$work/promoted")" ] \
  || { echo "compose-e2e: the api serves $(cat "$work/promoted"), the registry names $serving" >&2; exit 1; }
# The pointer moves before the cycle logs it, so the api can serve the bundle first: wait.
for _ in $(seq 30); do docker compose logs retrainer | grep -q "cycle: promoted" && break; sleep 1; done
docker compose logs retrainer | grep -q "cycle: promoted" \
  || { echo "compose-e2e: the retrainer logged no promotion in 30 s" >&2; exit 1; }
phase "the retrain loop promoted $serving and the api serves it"
