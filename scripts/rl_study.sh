#!/usr/bin/env bash
# The RL study on the embedded default (docs/rl.md#results-on-the-embedded-default): GRPO on the quickstart
# backbone (AGN rollouts, train split), a learned sampler on the frozen backbone, a supervised baseline at the
# same training time (the COCONUT curriculum's last stage, continued) and GRPO on top of it; then the main job's settings (MC-dropout,
# N = 64) and AGN (N = 64) on the test split for the start and each trained model, paired differences and
# coverage / majority curves against the start, and the figure.
#
#   bash scripts/rl_study.sh [OUTPUT_DIR]      (default outputs/rl_study; about 50 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/rl_study}
mkdir -p "$OUT"
quiet=(--trainer.enable_progress_bar false)

echo "== GRPO on the backbone (3000 steps)"
latentlit fit --config configs/quickstart/grpo.yaml --model.init_args.export_dir "$OUT/grpo_backbone" \
  --trainer.logger.init_args.save_dir "$OUT/runs" "${quiet[@]}"
echo "== learned sampler on the frozen backbone (400 steps)"
latentlit fit --config configs/quickstart/grpo_sampler.yaml --model.init_args.export_dir "$OUT/learned_sampler" \
  --trainer.logger.init_args.save_dir "$OUT/runs" "${quiet[@]}"
echo "== supervised baseline: the curriculum's last stage continued for about the same time (7500 steps)"
latentlit fit --config configs/quickstart/backbone.yaml --model.init_args.init_from quickstart \
  --model.init_args.stage0_length 0 --model.init_args.stage_length 1 --trainer.max_steps 7500 \
  --trainer.val_check_interval 1500 --model.init_args.export_dir "$OUT/sft_backbone" \
  --trainer.logger.init_args.save_dir "$OUT/runs" "${quiet[@]}"

echo "== GRPO on top of the supervised baseline (1000 steps)"
latentlit fit --config configs/quickstart/grpo.yaml --model.init_args.backbone "$OUT/sft_backbone" \
  --trainer.max_steps 1000 --model.init_args.export_dir "$OUT/sft_grpo_backbone" \
  --trainer.logger.init_args.save_dir "$OUT/runs" "${quiet[@]}"

run() { local name=$1; shift; latentlit predict "$@" --output_dir "$OUT/test_$name" "${quiet[@]}" > "$OUT/test_$name.log"; }
for model in start:quickstart grpo:"$OUT/grpo_backbone" sft:"$OUT/sft_backbone" sft_grpo:"$OUT/sft_grpo_backbone"; do
  run "${model%%:*}_dropout" --config configs/quickstart/predict_dropout.yaml --backbone "${model#*:}"
  run "${model%%:*}_agn" --config configs/quickstart/predict_agn.yaml --backbone "${model#*:}"
done
run learned --config configs/quickstart/predict_learned.yaml --sampler_path "$OUT/learned_sampler"

paired=(--paired greedy_accuracy --paired coverage@16 --paired majority_vote@16 --paired coverage@64 --paired majority_vote@64)
for trained in grpo sft sft_grpo; do
  for sampler in dropout agn; do
    echo "== $trained against the start, $sampler"
    python scripts/compare_runs.py "$OUT/test_start_$sampler" "$OUT/test_${trained}_$sampler" "${paired[@]}" \
      --curve coverage --curve majority_vote
    python scripts/compare_runs.py "$OUT/test_${trained}_$sampler" "$OUT/test_${trained}_$sampler" \
      --paired greedy_accuracy,majority_vote@16
  done
done
echo "== learned sampler against AGN and MC-dropout on the same backbone"
python scripts/compare_runs.py "$OUT/test_learned" "$OUT/test_learned" --paired greedy_accuracy,majority_vote@16
python scripts/compare_runs.py "$OUT/test_start_agn" "$OUT/test_learned" --paired coverage@16 --paired majority_vote@16
python scripts/compare_runs.py "$OUT/test_start_dropout" "$OUT/test_learned" --paired coverage@16 --paired majority_vote@16
python scripts/plot_grpo.py "$(dirname "$(find "$OUT/runs/quickstart_grpo" -name 'events.out.tfevents.*' | head -1)")" \
  --start "$OUT/test_start_agn" --trained "$OUT/test_grpo_agn" --out "$OUT/grpo.png"
