#!/usr/bin/env bash
# Every GPU measurement of the training-engine and generalisation issues in one run, for a session
# that is lent a GPU machine for a few minutes (no package registry there; Python 3.12 with torch,
# no mlflow or optuna). Prepare it once, beside the checkout, in the repository root:
#
#   ../shared/tools/offline-bundle.sh .gpu          # mlflow, optuna and theirs -> .gpu/site.tgz
#   cp -rL ../shared/data/faces-dev .gpu/faces-dev   # the development faces (.gpu/ is git-ignored:
#   cp ../shared/tools/cacd-scale.sh .gpu/           #  never commit them)
#
# then run `bash tools/gpu-measure.sh` there with .gpu carried (about 50 MB) and a timeout of
# 600 s. Everything goes to $OUT/gpu-log.txt (and the terminal); the folds' and seeds' scores to
# $OUT/scores.jsonl. Each phase has its own time limit, cut to what is left of TOTAL (570 s: one
# call of the device tool), so one slow phase cannot eat the rest. Phases timed alone on the GPU
# (throughput) never share it; phases that only measure accuracy or correctness run side by side.
#   env       GPU name, torch and CUDA versions; decodes the faces once (a shared cache)
#   bench     agestudy.bench of the default ensemble, CACD-sized (--scale-to 40000): agestudy's
#             loop, model alone, tuned standard loop, peak, ratios, then a profile of the step
#   accuracy  side by side: the CUDA-only tests; the GPU default's 5-fold CV on faces-dev/train
#             (tools/train-folds.py, one process a fold); its test accuracy with seeds 1 and 2
#   train     the default agestudy.train on faces-dev, alone: seconds of training, test accuracy
#   compile   the bench again with --compile (on an H200 in session 10 it was slower: not by default)
#   mainjob   the default main job (the study's trials, or MAINJOB_TRIALS of them, refit, analyses)
#             on a CACD-sized copy of faces-dev made of links (its accuracy means nothing: test/
#             repeats train/); stopped at its limit, its log still shows how far it got in how long
#   candidates  5-fold CV of each candidate GPU default, its folds side by side; CANDIDATES holds
#             configurations separated by spaces, each FIELD=VALUE TrainConfig fields joined by commas.
#             Each takes 3-5 minutes on an H200: run PHASES="env candidates" as a call of its own
#   baseline  the bench of the lab's baseline CNN with the notebook loop
# Pick phases with PHASES="bench train" bash tools/gpu-measure.sh; limits with LIMIT_<PHASE>=s.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-measure}
mkdir -p "$out"
log=$out/gpu-log.txt
scores=$out/scores.jsonl
exec > >(tee -a "$log") 2>&1
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI=sqlite:////tmp/gpu-measure-mlflow.db
py=${PYTHON:-python3}
bundle=${BUNDLE:-.gpu}
faces=${FACES:-$bundle/faces-dev}
scale=${SCALE:-40000}
steps=${STEPS:-60}
# on top of the GPU default (3 networks, batch 256, 560,000 images): 5 networks; twice the images
candidates=${CANDIDATES:-members=5 train_images=1120000}
flags() {  # flags FIELD=VALUE ...: agestudy.train's options (train_images=500 -> --train-images 500)
  local kv key; for kv in "$@"; do key=${kv%%=*}; printf -- ' --%s %s' "${key//_/-}" "${kv#*=}"; done
}
extra=$(flags ${FOLD_SET:-})  # e.g. FOLD_SET=train_images=500 for a smoke test
phases=${PHASES:-env bench accuracy train mainjob candidates baseline}
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

side_by_side() {  # side_by_side TAG 'command' ...: run the commands at once, each line tagged; wait for all
  local tag=$1 i=0; shift
  for command in "$@"; do
    i=$((i + 1))
    AGESTUDY_THREADS=2 bash -c "$command" 2>&1 | sed -u "s/^/[$tag $i] /" &  # 2 threads each: no oversubscription
  done
  wait
}
export -f side_by_side

folds() {  # folds TAG [--option VALUE ...]: the 5 folds of a configuration, one process each
  local tag=$1; shift
  local commands=()
  for k in 0 1 2 3 4; do
    # test-time views as well, free beside the training (on the CPU default ensemble: within the noise)
    commands+=("$py tools/train-folds.py --data $faces --fold $k --view ten --view 'crops(16)' $extra $* | tee -a $scores")
  done
  side_by_side "$tag" "${commands[@]}"
}

for p in $phases; do
  case $p in
    env)
      phase env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; \
        $py -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
        torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")'; nproc; \
        $py -c 'import mlflow, optuna; print(\"mlflow\", mlflow.__version__, \"optuna\", optuna.__version__)'; \
        $py -c 'from agestudy.data import load_data; load_data(\"$faces\", progress=False)'"
      [ -d /tmp/cacd ] || { bash "$bundle/cacd-scale.sh" "$faces" /tmp/cacd >/dev/null & cacd_pid=$!; } ;;
    bench)
      phase bench 90 "$py" -m agestudy.bench --data "$faces" --scale-to "$scale" --steps "$steps" --warmup 15 \
        --skip-notebook --profile 10 ;;
    accuracy)
      phase accuracy 200 bash -c "$(declare -f side_by_side folds); py=$py faces=$faces scores=$scores extra='$extra'; \
        side_by_side tests '$py -m pytest -q -p no:cacheprovider -k \"cuda or gpu\" tests/test_engine.py tests/test_cyclegan.py' \
          '$py tools/train-folds.py --data $faces --test $extra --seed 1 | tee -a $scores' \
          '$py tools/train-folds.py --data $faces --test $extra --seed 2 | tee -a $scores' & \
        folds default; wait" ;;
    train)
      phase train 90 "$py" -m agestudy.train --data "$faces" --quiet --run-name gpu-default ;;
    compile)
      phase compile 80 "$py" -m agestudy.bench --data "$faces" --scale-to "$scale" --steps "$steps" --warmup 15 \
        --skip-notebook --compile ;;
    mainjob)
      # the CACD-sized copy (a bare `wait` would also wait for the log's tee, for ever)
      if [ -n "${cacd_pid:-}" ]; then wait "$cacd_pid"; elif [ ! -d /tmp/cacd ]; then
        bash "$bundle/cacd-scale.sh" "$faces" /tmp/cacd >/dev/null; fi
      phase mainjob 240 "$py" -m agestudy.tune --data /tmp/cacd --experiment gpu-mainjob --quiet \
        ${MAINJOB_TRIALS:+--n-trials $MAINJOB_TRIALS} \
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
    candidates)
      for configuration in $candidates; do
        sets=$(flags ${configuration//,/ })
        echo "=== candidate: $configuration"
        phase candidate 300 bash -c "$(declare -f side_by_side folds); py=$py faces=$faces \
          scores=$scores extra='$extra'; folds '$configuration' $sets"
      done ;;
    baseline)
      phase baseline 60 "$py" -m agestudy.bench --data "$faces" --scale-to "$scale" --steps 30 --warmup 5 \
        --model baseline --members 1 ;;
    *) echo "unknown phase $p (env bench accuracy train compile mainjob candidates baseline)"; exit 2 ;;
  esac
done
echo "=== scores (JSON lines, $scores):"; cat "$scores" 2>/dev/null
echo "=== done $(date -u +%FT%TZ); log: $log"
