#!/usr/bin/env bash
# Every GPU measurement of the training-engine issue in one run, for a session that is lent a
# GPU machine for a few minutes (no package registry there; Python 3.12 with torch, no mlflow or
# optuna). Prepare it once, beside the checkout, in the repository root:
#
#   ../shared/tools/offline-bundle.sh .gpu          # mlflow, optuna and theirs -> .gpu/site.tgz
#   cp -rL ../shared/data/faces-dev .gpu/faces-dev   # the development faces (.gpu/ is git-ignored:
#   cp ../shared/tools/cacd-scale.sh .gpu/           #  never commit them)
#
# then run `bash tools/gpu-measure.sh` there with .gpu carried (about 50 MB) and a timeout of
# 600 s. Everything goes to $OUT/gpu-log.txt (and the terminal). Each phase has its own time
# limit, cut to what is left of TOTAL (570 s: one call of the device tool), so one slow phase
# cannot eat the rest and the script ends before the call's limit. Phases, most wanted first:
#   env      GPU name, torch and CUDA versions
#   tests    the CUDA-only tests (they skip on a CPU machine)
#   bench    agestudy.bench of the default ensemble and of the lab's baseline CNN, CACD-sized
#            (--scale-to 40000): agestudy's loop, model alone, tuned standard loop, peak, ratios
#   train    the default agestudy.train on faces-dev: seconds of training, test accuracy
#   mainjob  the default main job (study + refit + analyses) on a CACD-sized copy of faces-dev
#            made of links (its accuracy means nothing: test/ repeats train/); stopped at its
#            limit, its log still shows how many trials finished in how long
#   extra    the baseline CNN's bench and the default agestudy.train on faces-dev (test accuracy)
# Pick phases with PHASES="bench extra" bash tools/gpu-measure.sh; limits with LIMIT_<PHASE>=s.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-measure}
mkdir -p "$out"
log=$out/gpu-log.txt
exec > >(tee -a "$log") 2>&1
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI=sqlite:////tmp/gpu-measure-mlflow.db
py=${PYTHON:-python3}
bundle=${BUNDLE:-.gpu}
faces=${FACES:-$bundle/faces-dev}
phases=${PHASES:-env tests bench mainjob extra}
deadline=$(( $(date +%s) + ${TOTAL:-570} ))

if [ -f "$bundle/site.tgz" ]; then
  mkdir -p /tmp/site && tar -xzf "$bundle/site.tgz" -C /tmp/site && export PYTHONPATH=/tmp/site/site:$PWD
fi

phase() {  # phase NAME DEFAULT_LIMIT COMMAND...: time one phase under its own limit
  local name=$1 limit_var="LIMIT_${1^^}" start rc
  local limit=${!limit_var:-$2}; shift 2
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "=== phase $name skipped: ${left}s left of TOTAL"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  start=$(date +%s%N)
  echo "=== phase $name (limit ${limit}s) $(date -u +%FT%TZ)"
  timeout "$limit" "$@"; rc=$?
  printf '=== phase %s: rc %s, %.1f s%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))e-3" \
    "$([ "$rc" = 124 ] && echo ' (stopped at its limit)')"
}

for p in $phases; do
  case $p in
    env)
      phase env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
        $py -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
        torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")'; nproc" ;;
    tests)
      phase tests 120 "$py" -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/test_engine.py tests/test_cyclegan.py ;;
    bench)
      phase bench-default 150 "$py" -m agestudy.bench --data "$faces" --scale-to 40000 --steps 50 ;;
    mainjob)
      [ -d /tmp/cacd ] || bash "$bundle/cacd-scale.sh" "$faces" /tmp/cacd >/dev/null
      phase mainjob 600 "$py" -m agestudy.tune --data /tmp/cacd --experiment gpu-mainjob --quiet \
        --storage /tmp/gpu-measure-default.journal
      "$py" - <<'EOF'  # the trials' states and times, also when the phase was stopped at its limit
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
storage = JournalStorage(JournalFileBackend("/tmp/gpu-measure-default.journal"))
for t in optuna.load_study(study_name="default", storage=storage).trials:
    took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
    print(f"trial {t.number}: {t.state.name}, value {t.value}, {took and round(took, 1)} s")
EOF
      ;;
    extra)
      phase bench-baseline 120 "$py" -m agestudy.bench --data "$faces" --scale-to 40000 --steps 50 \
        --model baseline --members 1
      phase train 240 "$py" -m agestudy.train --data "$faces" --quiet --run-name gpu-default ;;
    *) echo "unknown phase $p (env tests bench mainjob extra)"; exit 2 ;;
  esac
done
echo "=== done $(date -u +%FT%TZ); log: $log"
