#!/usr/bin/env bash
# The GPU run of the ML-1M experiments (Table 3), made for a lent GPU machine with its own
# PyTorch: every model trains in its own process, in parallel (each is launch-bound, so they
# share one GPU well), each cut off after $BUDGET seconds. Results: $OUT/ml1m.json (merged)
# and $OUT/logs.tar.gz (every log and Markdown table).
#   DATA=<ml-1m split dir> OUT=<dir> [BUDGET=480] [EPOCHS=40] [DEVICE=cuda] bash bench/gpu.sh
set -u
DATA=${DATA:?the ML-1M split directory}
OUT=${OUT:?the output directory}
BUDGET=${BUDGET:-480}
EPOCHS=${EPOCHS:-40}
DEVICE=${DEVICE:-cuda}
WORK=$(mktemp -d)
PY=${PY:-python3}

{ nvidia-smi -L; $PY -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', ort.__version__, ort.get_available_providers())"; } >"$WORK/env.log" 2>&1

run() {  # name, then the command
  local name=$1; shift
  mkdir -p "$WORK/$name"
  timeout "$BUDGET" "$@" --results "$WORK/$name" >"$WORK/$name.log" 2>&1 &
}
run cosrec $PY bench/ml1m.py --device "$DEVICE" --epochs "$EPOCHS" --no-progress --data "$DATA" --models cosrec
run cosrec-base $PY bench/ml1m.py --device "$DEVICE" --epochs "$EPOCHS" --no-progress --data "$DATA" --models cosrec-base
for model in caser gru4rec fpmc fmc bpr poprec; do
  run "$model" $PY bench/compare.py --device "$DEVICE" --epochs "$EPOCHS" --data "$DATA" --models "$model" --work "$WORK/work-$model"
done
wait

$PY - "$WORK" "$OUT/ml1m.json" <<'PYEOF'
import json, pathlib, sys
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
merged = {}
for path in sorted(work.glob("*/ml1m.json")):
    merged.update(json.loads(path.read_text()))
out.write_text(json.dumps(merged, indent=2) + "\n")
print("models with results:", sorted(merged))
PYEOF
tar -C "$WORK" -czf "$OUT/logs.tar.gz" --exclude='work-*' .
tail -n 3 "$WORK"/*.log
