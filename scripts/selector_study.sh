#!/usr/bin/env bash
# The selector study on the embedded default (docs/results.md#selectors-closing-the-selection-gap): every
# LatentRM objective, the answer-reading RM, the paper's ablations (w/o stochastic rollouts: each step labelled
# with its own trajectory's outcome; BCE; a random head) and an ensemble, all trained on one set of rollout
# labels; one MC-dropout run per split with N = 64 (N = 4 and 16 are the exact k-subset estimates of that run),
# re-scored by each RM; the tempered vote and calibrated confidence fitted on the validation run; one table
# with paired intervals against the paper's contrastive RM (study.md, study.csv, figures).
#
#   bash scripts/selector_study.sh [OUTPUT_DIR]        (default outputs/selector_study)
#   LABELS=DIR bash scripts/selector_study.sh           reuse a labelled groups directory
#   N=16 RMS="contrastive pairwise" ...                 another N, fewer RMs
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/selector_study}
N=${N:-64}
LABELS=${LABELS:-$OUT/groups}
RMS=${RMS:-contrastive bce pairwise listwise group answer outcome random}
mkdir -p "$OUT"
common=(--trainer.enable_progress_bar false)

if [ ! -f "$LABELS/summary.json" ]; then
  echo "== rollout labelling into $LABELS"
  latentlit predict --config configs/quickstart/label.yaml --model.init_args.output_dir "$LABELS" "${common[@]}"
fi

echo "== LatentRM training"
trained=()
for rm in $RMS; do
  case $rm in
    random) extra=(--trainer.max_steps 0) ;;
    answer) extra=(--model.init_args.read_answer true) ;;
    outcome) extra=(--data.init_args.labels outcome) ;;
    *) extra=(--model.init_args.loss "$rm") ;;
  esac
  [ -f "$OUT/rm_$rm/model.safetensors" ] || latentlit fit --config configs/quickstart/latentrm.yaml \
    --data.init_args.groups_dir "$LABELS" --model.init_args.export_dir "$OUT/rm_$rm" \
    --trainer.logger.init_args.save_dir "$OUT/runs" "${common[@]}" "${extra[@]}"
  [ "$rm" = random ] || trained+=("$OUT/rm_$rm")
done
ENSEMBLE=""
if [ ${#trained[@]} -ge 2 ]; then
  python scripts/make_ensemble.py "$OUT/rm_ensemble" "${trained[@]}"
  ENSEMBLE=ensemble
fi

echo "== sampling (N = $N, latents saved) and re-scoring"
for split in val test; do
  latentlit predict --config configs/quickstart/predict_dropout.yaml --model.init_args.n_samples "$N" \
    --model.init_args.save_latents true --data.init_args.problems.init_args.split $split \
    --model.init_args.output_dir "$OUT/${split}_samples" "${common[@]}"
done
for rm in quickstart $RMS $ENSEMBLE; do
  path=$OUT/rm_$rm; [ "$rm" = quickstart ] && path=quickstart
  latentlit rescore "$OUT/val_samples" --latent_rm "$path" --output_dir "$OUT/val_$rm"
  python scripts/fit_selector.py "$OUT/val_$rm" --out "$OUT/selector_$rm.json"
  latentlit rescore "$OUT/test_samples" --latent_rm "$path" --selector "$OUT/selector_$rm.json" --output_dir "$OUT/test_$rm"
done

echo "== table"
latentlit study "$OUT"/test_quickstart "$OUT"/test_contrastive $(for rm in $RMS $ENSEMBLE; do
    [ "$rm" = contrastive ] || echo "$OUT/test_$rm"; done) \
  --k 4,16,$N --methods coverage,majority_vote,best_of_n,weighted_vote,tempered_vote \
  --baseline "$OUT/test_contrastive" --output "$OUT"
