#!/usr/bin/env bash
# Install (if needed) and run the whole xtlunet chain on the built-in example datasets, in ./xtlunet_demo.
# Small budgets so it finishes in about a quarter of an hour on 2 CPU cores: enough for the Scratch arm to learn the
# synthetic lesions (test Dice above 0.5), far too little to say anything about XTL against Scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
DEMO=${XTLUNET_DEMO_DIR:-$PWD/xtlunet_demo}
export XTLUNET_raw=$DEMO/raw XTLUNET_preprocessed=$DEMO/preprocessed XTLUNET_results=$DEMO/results
BUDGET=${XTLUNET_DEMO_GPU_GB:-0.15}            # real plans use the memory of the user's GPU (default 8 GB)
XTL_BUDGET=${XTLUNET_DEMO_XTL_GPU_GB:-0.37}    # the mammogram encoder's widths (up to 512) need a little more
EPOCHS=${XTLUNET_DEMO_EPOCHS:-6}
ITERS=${XTLUNET_DEMO_ITERS:-7}
SHORT=(--epochs "$EPOCHS" --iters-per-epoch "$ITERS" --val-iters 2 --val-no-tta --device cpu)

echo "== 1. built-in example datasets"
xtlunet example brain-ms
xtlunet example mammo

echo "== 2. the mammogram stage: a 2D encoder trained on mammograms"
xtlunet pretrain-2d -d 503 --arch plain --budget tiny --epochs 4 --iters-per-epoch 10 --batch-size 8 --input-size 64 64 \
  --device cpu -o "$DEMO/mammo_plain.pth"

echo "== 3. plan and preprocess the brain MS dataset (default plans, and XTL plans matching the 2D encoder)"
xtlunet plan-and-preprocess -d 501 -c 3d_fullres --gpu-memory-gb "$BUDGET" -np 2 --verify
xtlunet plan-and-preprocess -d 501 -c 3d_fullres --pretrained "$DEMO/mammo_plain.pth" --gpu-memory-gb "$XTL_BUDGET" -np 2

echo "== 4. five-fold cross-validation of the XTL and Scratch arms, both on the XTL plan (one plan for every arm)"
for fold in 0 1 2 3 4; do
  # XTLTrainer takes the mammogram checkpoint the plan was made for (its sha256 is in the plan)
  xtlunet -q train 501 3d_fullres "$fold" -tr XTLTrainer -p xtlunetPlansXTL "${SHORT[@]}"
  xtlunet -q train 501 3d_fullres "$fold" -tr ScratchTrainer -p xtlunetPlansXTL "${SHORT[@]}"
done

echo "== 5. ensembled prediction of the held-out test images (QC montages in predictions_*/qc), and their evaluation"
for arm in Scratch XTL; do
  out="$DEMO/predictions_$(echo "$arm" | tr '[:upper:]' '[:lower:]')"
  xtlunet predict -i "$XTLUNET_raw/Dataset501_BrainMS/imagesTs" -o "$out" -d 501 -c 3d_fullres \
    -tr "${arm}Trainer" -p xtlunetPlansXTL --device cpu --no-tta --qc "$XTLUNET_raw/Dataset501_BrainMS/labelsTs"
  echo "-- ${arm}Trainer on the held-out test images"
  xtlunet evaluate -r "$XTLUNET_raw/Dataset501_BrainMS/labelsTs" -p "$out" -d 501
done

echo "== 6. the arm comparison (paired Wilcoxon on per-case Dice over the cross-validation folds)"
xtlunet compare -d 501 -c 3d_fullres --arms XTLTrainer ScratchTrainer

echo "== 7. the report: one self-contained HTML page (dataset, plan, curves, scores, comparison, QC montages)"
REPORT="$DEMO/report_501_3d_fullres.html"
xtlunet report -d 501 -c 3d_fullres -o "$REPORT" --evaluations "$DEMO/predictions_scratch" "$DEMO/predictions_xtl"
echo "(small budgets: $EPOCHS epochs × $ITERS iterations per fold — enough to learn the synthetic lesions, not to rank the arms)"
echo "report: $REPORT"
