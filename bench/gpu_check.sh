#!/usr/bin/env bash
# The checks that need a GPU (issue #15), and of its CPU, for a lent GPU machine with its own
# python3, torch and CUDA. Every step writes into $OUT and a failing step does not stop the next.
#
#   DATA=<ml-1m split dir> WHEELS=<dir of the service's wheels> OUT=<dir> \
#       bash bench/gpu_check.sh train
#       the training step replayed as a CUDA graph: the same weights as eager steps
#       (tests/test_cuda_graphs.py), seconds per ML-1M epoch against eager steps and the literal
#       network (bench/train_speed.py), test MAP for each of the first 8 epochs
#       (bench/ml1m_test_run.py, to set beside bench/results/cosrec_cpu_test_epochs.jsonl)
#   WHEELS=<dir of the service's wheels> ORT_GPU=<onnxruntime-gpu, unpacked> OUT=<dir> \
#       bash bench/gpu_check.sh serve
#       onnxruntime's CUDA provider: parity with the CPU on 1,000 histories, and /recommend at
#       c=64 with 1 worker against the floor route, CUDA then CPU (bench/serve.py)
#   DATA=<ml-1m split dir> WHEELS=<dir of the service's wheels> OUT=<dir> \
#       bash bench/gpu_check.sh cpu
#       the lent machine's CPU (a Xeon with AVX-512 and AMX, unlike the development machine),
#       on 2 pinned cores as the development machine has: the training fast path against the
#       literal network, fp32 and bf16 (bench/train_speed.py), and the service against its
#       floor route at c=64 with 1 and 2 workers, and int8 with 1 (bench/serve.py)
#   DATA=<ml-1m split dir> WHEELS=<dir of the service's wheels> OUT=<dir> \
#       bash bench/gpu_check.sh cpu-bf16
#       the test MAP of the first 8 ML-1M epochs trained with bf16 autocast on that CPU's
#       every core (bench/ml1m_test_run.py), to set beside cosrec_cpu_test_epochs.jsonl
set -u
PY=${PY:-python3}
OUT=${OUT:?the output directory}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # name, then the command; its output goes to $OUT/name.log and to stdout
  local name=$1; shift
  echo "=== $name: $*"
  local started=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}

install_wheels() {  # the service's packages (contract/ needs pydantic), first on the path
  WHEELS=${WHEELS:?a directory of the service wheels}
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
}

{ nvidia-smi -L; nproc; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/env.log"

case ${1:-} in
train)
  DATA=${DATA:?the ML-1M split directory}
  install_wheels
  step graph_test $PY -m pytest -q --noconftest -p no:cacheprovider tests/test_cuda_graphs.py
  step train_speed $PY bench/train_speed.py --device cuda --data "$DATA/test/train.txt.gz" \
    --settings fast-fp32:300,fast-fp32-graph:1500,literal-fp32:300,literal-fp32-graph:1500 \
    --warmup 10 --out "$OUT/train_speed.json"
  step graph_epochs $PY bench/ml1m_test_run.py --data "$DATA" --device cuda --epochs 8 \
    --out "$OUT/cosrec_graph_test_epochs.jsonl"
  ;;
cpu)
  DATA=${DATA:?the ML-1M split directory}
  install_wheels
  pin=$(command -v taskset >/dev/null && echo "taskset -c 0,1")
  step cpu_train_speed $pin $PY bench/train_speed.py --device cpu --threads 2 \
    --data "$DATA/test/train.txt.gz" \
    --settings fast-fp32:60,literal-fp32:30,fast-bf16:60,literal-bf16:30 \
    --out "$OUT/cpu_train_speed.json"
  step cpu_serve_fp32 $pin $PY bench/serve.py --device cpu --workers 1 2 --concurrency 64 \
    --repeats 3 --duration 4 --out "$OUT/cpu_serve_fp32.json"
  step cpu_serve_int8 $pin $PY bench/serve.py --device cpu --precision int8 --workers 1 \
    --concurrency 1 64 --repeats 3 --duration 4 --out "$OUT/cpu_serve_int8.json"
  ;;
cpu-bf16)
  DATA=${DATA:?the ML-1M split directory}
  install_wheels
  step cpu_bf16_epochs $PY bench/ml1m_test_run.py --data "$DATA" --device cpu --bf16 \
    --epochs 8 --seconds 230 --out "$OUT/cosrec_cpu_bf16_xeon_test_epochs.jsonl"
  ;;
serve)
  ORT_GPU=${ORT_GPU:?onnxruntime-gpu}
  install_wheels
  # onnxruntime-gpu first on the path, before the machine's own CPU-only onnxruntime; the CUDA
  # and cuDNN libraries it loads are the ones torch's wheels brought.
  export PYTHONPATH="$ORT_GPU:$PYTHONPATH"
  nvidia_libs=$($PY -c "import nvidia, pathlib; print(':'.join(sorted({str(p.parent) for p in pathlib.Path(list(nvidia.__path__)[0]).rglob('lib*.so*')})))")
  export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | tee -a "$OUT/env.log"
  for device in cuda cpu; do
    step "serve_$device" $PY bench/serve.py --device "$device" --workers 1 --concurrency 64 \
      --repeats 3 --duration 4 --out "$OUT/serve_$device.json"
  done
  ;;
*)
  echo "usage: bash bench/gpu_check.sh train|serve|cpu|cpu-bf16" >&2
  exit 2
  ;;
esac
