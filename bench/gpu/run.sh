#!/usr/bin/env bash
# The one script for a lent GPU machine (issue 22 §4): 15 minutes of device time in all, 10 per command, no
# network and no Rust there, so it runs a binary built here by scripts/build-cuda.sh (carried in the working
# tree) and writes everything under $OUT. Rehearse it on a CPU machine with DEVICE=cpu (same steps, every
# "cuda" run on the CPU: checks the script, not the GPU).
#
# usage: bench/gpu/run.sh [DEADLINE_S]          (default 480: stops starting new work after that many seconds)
# environment:
#   DGM_BIN   the binary (default target/cuda/dgm-cuda, or its .xz copy unpacked; DEVICE=cpu: target/release/dgm)
#   OUT       results folder (default bench/out/gpu); the device tool returns what lands there
#   DEVICE    cuda (default) or cpu (rehearsal)
#   STEPS     training steps per family for the CPU/GPU comparison (default 20)
#   PYTHON    interpreter whose site-packages hold the nvidia-* wheels (PyTorch's; default python3)
#
# What it does, each part skipped once the deadline has passed:
#  1. the machine: nvidia-smi, the CUDA libraries found, the binary's `--version`;
#  2. one model per family on embedded data (shapes, toy2d, generated text; an image autoregressive model is
#     left out: PixelCNN's sampling of a 32 × 32 RGB image is 3072 passes), STEPS steps with the same seed
#     on the CPU and on the GPU, every step logged: step 1's loss and global gradient norm side by side (the
#     same parameters and batch on both devices, so this checks the forward and the gradients; tolerance
#     below), the last step's loss with a looser one (the updates compound the rounding), then samples from
#     the GPU-trained run drawn on the CPU and from the CPU-trained run on the GPU (a checkpoint crosses
#     devices);
#  3. speed: steps/s of the same runs on each device, from the trainer's own log (`it_s`, first steps
#     included: a smoke number, not a benchmark);
#  4. `--device cuda` with the GPU hidden (CUDA_VISIBLE_DEVICES="") must fail with one line and exit 2.
# Results: $OUT/summary.tsv (one line per check: name, status, numbers) plus each command's output.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
deadline=$((start + ${1:-480}))
dev="${DEVICE:-cuda}"
if [ "$dev" = cpu ]; then bin="${DGM_BIN:-target/release/dgm}"; else bin="${DGM_BIN:-target/cuda/dgm-cuda}"; fi
out="${OUT:-bench/out/gpu}"
steps="${STEPS:-20}"
py="${PYTHON:-python3}"
mkdir -p "$out"
# the carried copy is xz-compressed (scripts/build-cuda.sh): unpack it next to the results
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
  xz -dc "$bin.xz" >"$out/dgm-bin" && chmod +x "$out/dgm-bin" && bin="$out/dgm-bin"
fi
bin=$(realpath "$bin")
summary="$out/summary.tsv"
: >"$summary"
note() { printf '%s\n' "$*" | tee -a "$summary"; }
left() { [ "$SECONDS" -lt "$deadline" ]; }

# 1. the machine
if [ "$dev" = cuda ]; then
  # PyTorch's CUDA wheels: every folder under site-packages/nvidia that holds a shared library
  libs=$("$py" - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = {os.path.dirname(f) for r in roots for f in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
  )
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1
  note "machine	gpu	$(tr '\n' ' ' <"$out/gpu.txt")"
  note "machine	cuda-libs	${libs:-none found}"
fi
if ! "$bin" --version >"$out/version.txt" 2>&1; then
  note "binary	FAIL	$bin does not start: $(head -c 300 "$out/version.txt")"
  exit 1
fi
note "binary	ok	$bin $(cat "$out/version.txt")"

# 2 and 3. one model per family: name | train arguments | sample arguments
families=(
  "vae|vae --data shapes|-n 16 --out samples.png"
  "ddpm|--config configs/ddpm-shapes.toml|-n 4 --steps 20 --out samples.png"
  "gpt|gpt --data text:numbers-en-de|-n 1 --max-tokens 32"
  "realnvp|realnvp --data toy2d:moons|-n 64 --out samples.png"
  "dcgan|dcgan --data shapes|-n 16 --out samples.png"
  "ebm|ebm --data toy2d:moons|-n 64 --out samples.png"
)
# step 1 (loss, gradient norm): within this relative difference CPU vs GPU (f32 sums in other orders);
# the last step's loss within last_tol
tol=1e-3
last_tol=2e-2
# `logged DIR KEY first|last`: KEY of the first or last per-step record of a run's metrics.jsonl
logged() { "$py" -c 'import json,sys
rs = [json.loads(l) for l in open(sys.argv[1])]
rs = [r for r in rs if sys.argv[2] in r and "step" in r]
if rs: print(rs[0 if sys.argv[3] == "first" else -1][sys.argv[2]])' "$1/metrics.jsonl" "$2" "$3" 2>/dev/null; }
close() { "$py" -c 'import sys; c, g, t = map(float, sys.argv[1:]); print("ok" if abs(c - g) <= t * max(abs(c), 1e-6) else "FAIL")' "$@"; }
# the trainer's last steps/s of a run
rate() { local r; r=$(logged "$1" it_s last); if [ -n "$r" ]; then printf '%.2f' "$r"; else echo n/a; fi; }
for fam in "${families[@]}"; do
  IFS='|' read -r name targs sargs <<<"$fam"
  left || { note "$name	skipped	deadline"; continue; }
  # the same seed on each device: $name-cpu on the CPU, $name-gpu on $dev
  for pair in "cpu cpu" "gpu $dev"; do
    read -r tag d <<<"$pair"
    rm -rf "$out/$name-$tag"
    # shellcheck disable=SC2086
    timeout 240 "$bin" train $targs --steps "$steps" --seed 1 --device "$d" --out "$out/$name-$tag" \
      --set train.log_every=1 --quiet \
      >"$out/$name-$tag.train.txt" 2>&1
    echo $? >"$out/$name-$tag.rc"
  done
  rc_c=$(cat "$out/$name-cpu.rc") rc_g=$(cat "$out/$name-gpu.rc")
  c=$(logged "$out/$name-cpu" loss first) g=$(logged "$out/$name-gpu" loss first)
  cn=$(logged "$out/$name-cpu" grad_norm first) gn=$(logged "$out/$name-gpu" grad_norm first)
  cl=$(logged "$out/$name-cpu" loss last) gl=$(logged "$out/$name-gpu" loss last)
  if [ "$rc_c" != 0 ] || [ "$rc_g" != 0 ] || [ -z "$c" ] || [ -z "$g" ] || [ -z "$cn" ] || [ -z "$gn" ]; then
    note "$name	FAIL	train: cpu exit $rc_c, $dev exit $rc_g: $(tail -c 300 "$out/$name-gpu.train.txt")"
    continue
  fi
  note "$name	$(close "$c" "$g" "$tol")	step 1 loss cpu $c $dev $g (rel tol $tol)"
  note "$name	$(close "$cn" "$gn" "$tol")	step 1 gradient norm cpu $cn $dev $gn (rel tol $tol)"
  note "$name	$(close "$cl" "$gl" "$last_tol")	step $steps loss cpu $cl $dev $gl (rel tol $last_tol); steps/s cpu $(rate "$out/$name-cpu") $dev $(rate "$out/$name-gpu")"
  # a checkpoint crosses devices: the GPU-trained run sampled on the CPU, the CPU-trained run on the GPU
  for pair in "gpu cpu" "cpu $dev"; do
    read -r from on <<<"$pair"
    log="$out/$name-$from-on-$on.txt"
    # shellcheck disable=SC2086
    if timeout 120 "$bin" sample --run "$out/$name-$from" --device "$on" --seed 2 \
      ${sargs//samples.png/$out/$name-$from-on-$on.png} >"$log" 2>&1; then
      note "$name	ok	run trained on $from sampled on $on"
    else
      note "$name	FAIL	run trained on $from sampled on $on: $(tail -c 300 "$log")"
    fi
  done
done

# 4. no GPU visible: one line, exit 2
if [ "$dev" = cuda ] && left; then
  CUDA_VISIBLE_DEVICES="" "$bin" train vae --data shapes --steps 1 --device cuda --out "$out/hidden" \
    >"$out/hidden.txt" 2>&1
  rc=$?
  lines=$(wc -l <"$out/hidden.txt")
  if [ "$rc" = 2 ] && [ "$lines" -le 1 ]; then st=ok; else st=FAIL; fi
  note "no-gpu	$st	exit $rc, $lines line(s): $(head -c 200 "$out/hidden.txt")"
fi
rm -f "$out/dgm-bin"
note "done	$((SECONDS - start)) s"
