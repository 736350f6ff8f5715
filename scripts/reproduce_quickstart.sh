#!/usr/bin/env bash
# The whole embedded-default pipeline (paper Secs. 3.1-3.3 on the quickstart task):
#   backbone (shipped, or retrained with RETRAIN=1) -> rollout labelling -> LatentRM training
#   (contrastive, BCE, and the untrained random-head baseline) -> predict for N in {4, 16, 64}
#   -> one table: coverage, majority vote, best-of-N (contrastive / BCE / random head),
#   weighted vote, beam search (B*K = N). Also written as table.json in the output directory.
#
#   bash scripts/reproduce_quickstart.sh [OUTPUT_DIR]      (default outputs/reproduce_quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/reproduce_quickstart}
mkdir -p "$OUT"
common=(--trainer.enable_progress_bar false)

BACKBONE=quickstart
if [ "${RETRAIN:-0}" = "1" ]; then
  latentlit fit --config configs/quickstart/backbone.yaml --model.init_args.export_dir "$OUT/backbone" "${common[@]}"
  BACKBONE="$OUT/backbone"
fi

echo "== rollout labelling"
latentlit predict --config configs/quickstart/label.yaml --model.init_args.backbone "$BACKBONE" \
  --model.init_args.output_dir "$OUT/groups" --trainer.default_root_dir "$OUT" "${common[@]}"

echo "== LatentRM training"
for loss in contrastive bce; do
  latentlit fit --config configs/quickstart/latentrm.yaml --model.init_args.backbone "$BACKBONE" \
    --model.init_args.loss $loss --data.init_args.groups_dir "$OUT/groups" \
    --model.init_args.export_dir "$OUT/rm_$loss" --trainer.logger.init_args.save_dir "$OUT/runs" "${common[@]}"
done
latentlit fit --config configs/quickstart/latentrm.yaml --model.init_args.backbone "$BACKBONE" --trainer.max_steps 0 \
  --data.init_args.groups_dir "$OUT/groups" --model.init_args.export_dir "$OUT/rm_random" \
  --trainer.logger.init_args.save_dir "$OUT/runs" "${common[@]}"

echo "== predict"
declare -A BEAM=([4]=2 [16]=4 [64]=8)
for n in 4 16 64; do
  for rm in contrastive bce random; do
    extra=()
    [ "$rm" = contrastive ] && extra=(--model.init_args.beam_width "${BEAM[$n]}")
    latentlit predict --config configs/quickstart/predict_bon.yaml --model.init_args.backbone "$BACKBONE" \
      --model.init_args.n_samples $n --model.init_args.latent_rm "$OUT/rm_$rm" --model.init_args.beam_width null \
      "${extra[@]}" --model.init_args.output_dir "$OUT/predict_N${n}_$rm" \
      --trainer.logger.init_args.save_dir "$OUT/runs" "${common[@]}"
  done
done

python scripts/quickstart_table.py "$OUT"
