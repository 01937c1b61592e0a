#!/usr/bin/env bash
# `make demo` / `make demo-brats`: the whole pipeline on a synthetic phantom, on CPU, in a scratch folder.
# Usage: scripts/demo.sh CLINIX_EXECUTABLE OUT_DIR [ct|brats|lesion]
#   ct:     an abdomen CT, organ and tumours (classes, softmax)
#   brats:  a 4-channel brain MRI, whole tumour / tumour core / enhancing tumour (regions, sigmoid)
#   lesion: CT-sized chest scans (512×512×40-80) with 1-3 small lesions; the CPU recipe trains 20 minutes
set -euo pipefail
clinix=${1:-clinix}
out=${2:-demo_work}
kind=${3:-ct}
data="$out/phantom"
work="$out/work"
started=$SECONDS
cases=8 test_cases=2 plan_options=()
if [[ $kind == lesion ]]; then
    cases=12 test_cases=4 plan_options=(--train-minutes 20)
fi

step() { printf '\n\033[1m== %s\033[0m  (%ds)\n' "$*" $((SECONDS - started)); }

step "1/7 synthetic $kind phantom: $cases training + $test_cases held-out cases"
"$clinix" phantom "$data" --kind "$kind" --cases "$cases" --test-cases "$test_cases" --seed 0 --overwrite

step "2/7 validate the dataset"
"$clinix" validate "$data"

step "3/7 fingerprint and plan for a 2-core CPU"
"$clinix" plan "$data" --workdir "$work" --device cpu "${plan_options[@]}"

step "4/7 preprocess"
"$clinix" preprocess --workdir "$work"

step "5/7 train fold 0 (the CPU plan's epochs and iterations)"
"$clinix" train --fold 0 --workdir "$work" --overwrite

step "6/7 predict the held-out cases"
"$clinix" predict "$data/imagesTs" "$out/predictions" --workdir "$work" --folds 0 --overwrite --profile

step "7/7 evaluate against their labels"
"$clinix" evaluate "$out/predictions" "$data/labelsTs" --dataset-json "$data/dataset.json"

printf '\nDemo finished in %d s. Everything it wrote is under %s.\n' $((SECONDS - started)) "$out"
