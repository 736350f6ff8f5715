#!/usr/bin/env bash
# The whole embedded-default pipeline (paper Secs. 3.1-3.3 on the quickstart task):
#   backbone (shipped, or retrained with RETRAIN=1) -> rollout labelling -> LatentRM training
#   (contrastive, BCE, and the untrained random-head baseline) -> predict for N in {4, 16, 64}
#   -> one table: coverage, majority vote, best-of-N (contrastive / BCE / random head),
#   weighted vote, beam search (B*K = N), DVTS (N/W subtrees of width W, best winner and vote of the
#   winners). Also written as table.json in the output directory.
#
#   bash scripts/reproduce_quickstart.sh [OUTPUT_DIR]      (default outputs/reproduce_quickstart[_llama])
#   FAMILY=llama bash scripts/reproduce_quickstart.sh       the Llama family (dynamic latent stop,
#                                                           configs/quickstart_llama/)
#   RMS="contrastive random" ...                            only these LatentRMs (the table omits the others)
set -euo pipefail
cd "$(dirname "$0")/.."
FAMILY=${FAMILY:-gpt2}
case "$FAMILY" in
  gpt2) CONF=configs/quickstart; BACKBONE=quickstart; OUT=${1:-outputs/reproduce_quickstart} ;;
  llama) CONF=configs/quickstart_llama; BACKBONE=quickstart_llama; OUT=${1:-outputs/reproduce_quickstart_llama} ;;
  *) echo "FAMILY=$FAMILY: expected gpt2 or llama" >&2; exit 2 ;;
esac
RMS=${RMS:-contrastive bce random}
mkdir -p "$OUT"
common=(--trainer.enable_progress_bar false)

if [ "${RETRAIN:-0}" = "1" ]; then
  latentlit fit --config $CONF/backbone.yaml --model.init_args.export_dir "$OUT/backbone" "${common[@]}"
  BACKBONE="$OUT/backbone"
fi

echo "== rollout labelling"
latentlit predict --config $CONF/label.yaml --model.init_args.backbone "$BACKBONE" \
  --model.init_args.output_dir "$OUT/groups" "${common[@]}"

echo "== LatentRM training"
for rm in $RMS; do
  if [ "$rm" = random ]; then
    steps=(--trainer.max_steps 0)
  else
    steps=(--model.init_args.loss $rm)
  fi
  latentlit fit --config $CONF/latentrm.yaml --model.init_args.backbone "$BACKBONE" "${steps[@]}" \
    --data.init_args.groups_dir "$OUT/groups" --model.init_args.export_dir "$OUT/rm_$rm" \
    --trainer.logger.init_args.save_dir "$OUT/runs" "${common[@]}"
done

echo "== predict"
declare -A BEAM=([4]=2 [16]=4 [64]=8)
for n in 4 16 64; do
  for rm in $RMS; do
    extra=()
    # beam search B x K = BEAM x N/BEAM, and DVTS with N/W = BEAM subtrees of width W = N/BEAM: same N per step
    [ "$rm" = contrastive ] && extra=(--model.init_args.beam_width "${BEAM[$n]}" --model.init_args.dvts_width $((n / BEAM[$n])))
    latentlit predict --config $CONF/predict_bon.yaml --model.init_args.backbone "$BACKBONE" \
      --model.init_args.n_samples $n --model.init_args.latent_rm "$OUT/rm_$rm" --model.init_args.beam_width null \
      --model.init_args.dvts_width null \
      "${extra[@]}" --model.init_args.output_dir "$OUT/predict_N${n}_$rm" "${common[@]}"
  done
done

python scripts/quickstart_table.py "$OUT"
