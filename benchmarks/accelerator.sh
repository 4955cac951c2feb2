#!/usr/bin/env bash
# The accelerator check of issue 11, as one prepared script (device time is short: minutes).
#
#   bash benchmarks/accelerator.sh prepare   # here, with pip and the shared data: fills .whl/ and
#                                            # .device_data/ (both git-ignored, carried to the device)
#   bash benchmarks/accelerator.sh run       # there: installs the carried wheels beside the
#                                            # machine's own jax, prepares Food-Kitchen, benches
#
# `run` writes into the folder given as its second argument (relative to the repository root),
# else $OUT (the device tool's), else accelerator_out/ (git-ignored):
#   env.txt           python, jax / jaxlib / flax / optax versions, backend and devices
#   sampling.json     `lgcd_jax.bench --json`: LGCD's default sampler (DDIM from the guess) and
#                     DDPM, at BATCH_SIZES x PRECISIONS, Food-Kitchen shapes, fresh weights
#   scale.json        the 1,000,000-item catalogue row (XLA's peak memory) and the train steps
#   summary.txt       both files' rows as `python -m lgcd_jax.bench` prints them: users/s,
#                     compile, FLOPs/user, FLOP/s, bound; catalogue memory; train steps' share
#   *.log             each step's stderr
# Each step has its own time limit, so one that runs long leaves the others' figures.
#
# Settings (environment): PYTHON (python3), BACKEND (gpu; cpu for a dry run here), BATCH_SIZES
# (1024,4096,16384), PRECISIONS (float32,bfloat16), CATALOGUE (1000000), TRAIN_STEPS (20),
# STEP_TIMEOUT (s per step, 240), DATA (.device_data/food-kitchen), WHEELS_DIR (.whl; a folder
# without wheels installs none, e.g. for a dry run in the project's own venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the device image lacks of install_requires (it has jax and jaxlib 0.11.2 with their CUDA
# plugin, numpy, scipy, absl, etils, tensorstore, ...): grain's binary wheel and the pure-Python
# parts at the project's pins, except flax: 0.12.8 does not import on jax 0.11.2, 0.12.12 does.
WHEELS=(grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0 flax==0.12.12
        optax==0.2.8 orbax-checkpoint==0.12.8)
DEVICE_PY=3.12  # the device image's python3

prepare() {
  rm -rf .whl && mkdir -p .whl .device_data  # one version of each wheel, or the install stops
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)  # kept out of git, as the device tool asks
  mkdir -p "$(dirname "$exclude")"
  for p in .whl/ .device_data/; do
    grep -qxF "/$p" "$exclude" 2>/dev/null || echo "/$p" >> "$exclude"
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PY" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  local src=../shared/data/food-kitchen
  [ -f "$src/num.txt" ] || { echo "accelerator.sh: no Food-Kitchen release at $src" >&2; exit 1; }
  rm -rf .device_data/food-kitchen && cp -r "$src" .device_data/food-kitchen
  du -sh .whl .device_data
  echo "carry: [\".whl\", \".device_data\"]; command: bash benchmarks/accelerator.sh run"
}

run() {
  local out=${1:-${OUT:-accelerator_out}}
  local py=${PYTHON:-python3} backend=${BACKEND:-gpu} limit=${STEP_TIMEOUT:-240}
  local data=${DATA:-.device_data/food-kitchen}
  mkdir -p "$out"
  export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/lgcd_jax_accel_cache}
  local wheels=${WHEELS_DIR:-.whl}
  if compgen -G "$wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/lgcd_site "$wheels"/*.whl
    # PYTHONPATH comes before site-packages: the carried pins win over the image's flax, optax
    # and orbax; jax and jaxlib (not carried) stay the image's, with their accelerator plugin.
    export PYTHONPATH="$PYTHONPATH:/tmp/lgcd_site"
  fi
  "$py" - > "$out/env.txt" 2>&1 <<'EOF' || { cat "$out/env.txt"; exit 1; }
import sys, jax, jaxlib, flax, optax
print("python", sys.version.split()[0])
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__,
      "optax", optax.__version__)
print("backend", jax.default_backend(), "devices", jax.devices())
EOF
  cat "$out/env.txt"
  if [ ! -f prepared/food-kitchen/manifest.json ]; then
    "$py" -m lgcd_jax.data.prepare --source=llmcdsr --input="$data" \
      --output=prepared/food-kitchen > "$out/prepare.log" 2>&1 \
      || { tail -20 "$out/prepare.log"; exit 1; }
  fi
  local bench=("$py" -m lgcd_jax.bench --config=configs/food_kitchen.py --backend="$backend"
               --workdir=workdirs/accelerator --repeats=5 --json)
  local rc_sampling=0 rc_scale=0  # 124: the step ran out of time
  timeout "$limit" "${bench[@]}" --batch_sizes="${BATCH_SIZES:-1024,4096,16384}" \
    --precisions="${PRECISIONS:-float32,bfloat16}" --train_steps=0 \
    > "$out/sampling.json" 2> "$out/sampling.log" || rc_sampling=$?
  echo "sampling rows: exit $rc_sampling"
  # --nosampling: the sampling rows were timed above; this call adds the catalogue row and the
  # train steps only.
  timeout "$limit" "${bench[@]}" --batch_sizes="${BATCH_SIZES%%,*}" --nosampling \
    --catalogue="${CATALOGUE:-1000000}" --train_steps="${TRAIN_STEPS:-20}" \
    > "$out/scale.json" 2> "$out/scale.log" || rc_scale=$?
  echo "catalogue row and train steps: exit $rc_scale"
  "$py" benchmarks/summarise_bench.py "$out/sampling.json" "$out/scale.json" | tee "$out/summary.txt"
  [ "$rc_sampling" -eq 0 ] && [ "$rc_scale" -eq 0 ]
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash benchmarks/accelerator.sh prepare|run [OUTDIR]" >&2; exit 2 ;;
esac
