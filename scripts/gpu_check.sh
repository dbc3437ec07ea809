#!/usr/bin/env bash
# Prove the CUDA path end to end on one GPU in under ~10 minutes: the default patient (SmolLM2-135M) in bf16 on
# cuda is implanted (float32 masters), then unlearned with STAMP and with GA, each through the runner, and the
# forget score must fall; the resource plan of the same config is printed beside the allocator's measured peak.
#
#   make .venv/bin/.installed             # the project, as for the tests
#   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/<cuXYZ>  # a CUDA build
#   bash scripts/gpu_check.sh [more run.py overrides]
#
# DEVICE=cpu DTYPE=float32 runs the same steps on the CPU (how it was checked here: no GPU has been lent to this
# project yet, so the CUDA run itself is untested; if it fails, that is the finding for the GPU issue).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-bfloat16}
if [[ $DEVICE == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)')):" \
         "install a CUDA build of torch, see the header of this script" >&2
    exit 2
fi
export REPAIR_CACHE=${REPAIR_CACHE:-$PWD/.cache/repair-gpu} WANDB_MODE=offline
OUT=${OUT:-outputs/gpu_check}
SMALL=(patient.device=$DEVICE patient.dtype=$DTYPE task=pii task.num_profiles=8 "task.attributes=[address,phone]"
       task.corpus_size=8 eval.paraphrases=false logger=none "$@")
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU',
      'torch', torch.__version__)"
for method in stamp ga; do
    "$PY" -m repair.resources "${SMALL[@]}" method=$method
    "$PY" run.py "${SMALL[@]}" method=$method hydra.run.dir="$OUT/$method"
    "$PY" - "$OUT/$method/results.json" <<'PYEOF'
import json, sys
res = json.load(open(sys.argv[1]))
before, after = res["metrics"]["before"], res["metrics"]["after"]
cuda = res["unlearn"].get("memory", {}).get("peak_cuda_mb")
print(f"gpu_check {res['method']}: F-RL {before['f_rl']:.3f} -> {after['f_rl']:.3f}, R-RL {before['r_rl']:.3f} -> "
      f"{after['r_rl']:.3f}, unlearn {res['runtime_s']['unlearn']:.1f} s" + (f", CUDA peak {cuda:.0f} MB" if cuda else ""))
assert after["f_rl"] < before["f_rl"] - 0.3, "forgetting did not happen on CUDA"
PYEOF
done
echo "gpu_check: passed"
