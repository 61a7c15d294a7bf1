#!/usr/bin/env bash
# The GPU paths in one short run on a CUDA machine (the CI machines have none): the GPU tests of
# tests/test_train.py (bf16 without DeepSpeed, ZeRO-2 and ZeRO-3 over NCCL) and bench/bench_train.py on the GPU,
# tiny and wider. Figures go to bench/results/gpu/ (or $OUT when set) with the card's name.
#
#   bench/gpu_check.sh              # in a venv with the train extras (make test sets one up), on a GPU machine
#
# A machine whose python lacks TRL/DeepSpeed takes them as wheels: put them in .whl/ (pip download ... -d .whl)
# and they are installed into /tmp/site first, without touching the machine's own torch.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" -c 'import torch, transformers, trl, deepspeed, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers",
      transformers.__version__, "trl", trl.__version__, "deepspeed", deepspeed.__version__)'
} 2>&1 | tee "$out/versions.txt"
rc=0
timeout 300 "$py" -m pytest -p no:cacheprovider -q -rA tests/test_train.py -k gpu_bf16 2>&1 | tee "$out/pytest.log"
rc=$((rc || ${PIPESTATUS[0]}))
for run in "64 2" "1024 8" "1024 8 --ssrl-first"; do  # the last: the order of the two runs swapped
    set -- $run
    name=train-h$1-l$2${3:+-ssrl-first}
    timeout 240 "$py" bench/bench_train.py --device cuda --steps 16 --hidden-size "$1" --layers "$2" ${3:-} \
        --out "$out/$name.json" 2>&1 | grep -v "^\s*$" | tail -n 7 | tee "$out/$name.txt"
    rc=$((rc || ${PIPESTATUS[0]}))
done
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|overhead|median|bare TRL|ssrl train " "$out"/*.log "$out"/*.txt
exit $rc
