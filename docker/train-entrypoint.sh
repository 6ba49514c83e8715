#!/bin/sh
# The compose trainer: train once into the bundle registry (/bundles: <model_version>/ bundles,
# `current` the serving one), then exit. The `retrainer` service (profile `loop`) keeps it fresh.
#   COSREC_TRAIN_DATA    a data file inside the container (e.g. /data/log.csv); unset: generated data
#   COSREC_TRAIN_FORMAT  its format (default csv; see `cosrec train --help`)
#   COSREC_TRAIN_EPOCHS  epochs (default: the trainer's own)
#   COSREC_RETRAIN=1     train even when a bundle already serves
# Arguments given to the container are passed on to `cosrec train`.
set -eu
registry=${COSREC_REGISTRY:-/bundles}
if [ -d "$registry/current" ] && [ ! -L "$registry/current" ]; then
  # a bundle written by a version before the registry: it becomes the registry's first entry
  cosrec bundles add "$registry/current" --registry "$registry" --promote
fi
if [ -e "$registry/current" ] && [ "${COSREC_RETRAIN:-0}" != 1 ]; then
  echo "trainer: $registry/current already serves a bundle; set COSREC_RETRAIN=1 to train a new one"
  exit 0
fi
if [ -n "${COSREC_TRAIN_DATA:-}" ]; then
  set -- --data "$COSREC_TRAIN_DATA" --format "${COSREC_TRAIN_FORMAT:-csv}" "$@"
else
  set -- --synthetic "$@"
fi
if [ -n "${COSREC_TRAIN_EPOCHS:-}" ]; then
  set -- "$@" --epochs "$COSREC_TRAIN_EPOCHS"
fi
# Progress bars only on a terminal; in `docker compose logs` the per-epoch lines say enough.
[ -t 2 ] || set -- "$@" --no-progress
staging="$registry/.staging-$$"
cosrec train "$@" --out "$staging"
exec cosrec bundles add "$staging" --registry "$registry" --promote
