#!/bin/sh
# The compose trainer: train once, write the serving bundle where the api reads it, exit.
#   COSREC_TRAIN_DATA    a data file inside the container (e.g. /data/log.csv); unset: generated data
#   COSREC_TRAIN_FORMAT  its format (default csv; see `cosrec train --help`)
#   COSREC_TRAIN_EPOCHS  epochs (default: the trainer's own)
#   COSREC_RETRAIN=1     train even when a bundle is already there
# Arguments given to the container are passed on to `cosrec train`.
set -eu
out=${COSREC_BUNDLE_OUT:-/bundles/current}
if [ -f "$out/manifest.json" ] && [ "${COSREC_RETRAIN:-0}" != 1 ]; then
  echo "trainer: $out already holds a bundle; set COSREC_RETRAIN=1 to train a new one"
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
exec cosrec train "$@" --out "$out"
