#!/usr/bin/env bash
# The GPU figures of the benchmarks page in one prepared run (about 8 minutes on one H100/H200):
# the sampling bench in bf16 for N = 1, 8, 64, 256, both samplers, without and with torch.compile;
# the beam-search / best-of-N scoring bench; the main job on CUDA. Each step has its own time limit
# and log, and a failing step does not stop the others.
#
#   OUT=gpu_results DATA=../shared/data bash scripts/gpu_check.sh
#
# DATA must hold gsm8k/train.jsonl and coconut_format/gsm_test.json (the GPT-2-small-sized bench
# backbone's tokenizer and prompts); without it the two benches use synthetic prompts where they can.
# Not yet run on a GPU (no GPU machine was lent to the session that wrote it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false

step() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" > "$OUT/torch.txt" 2>&1
prompts=gsm_test
[ -f "$DATA/coconut_format/gsm_test.json" ] || prompts=synthetic
step sampling_bf16 150 python scripts/bench_sampling.py --device cuda --dtype bfloat16 --ns 1,8,64,256 \
    --questions 8 --prompts "$prompts" --data "$DATA"
step sampling_bf16_compile 180 python scripts/bench_sampling.py --device cuda --dtype bfloat16 --ns 1,8,64,256 \
    --questions 8 --prompts "$prompts" --data "$DATA" --compile
step sampling_bf16_real 60 python scripts/bench_sampling.py --device cuda --dtype bfloat16 --real --data "$DATA"
step beam_search 60 python scripts/bench_beam_search.py --device cuda --dtype bfloat16 --data "$DATA"
step main_job 90 python -m latentlit.cli predict --config configs/quickstart/predict_dropout.yaml \
    --trainer.accelerator gpu --output_dir "$OUT/main_job"
cat "$OUT/steps.txt"
