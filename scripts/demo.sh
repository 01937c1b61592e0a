#!/usr/bin/env bash
# `make demo`: the pipeline on the embedded synthetic phantom, on CPU, in a scratch folder.
# Usage: scripts/demo.sh CLINIX_EXECUTABLE OUT_DIR
set -euo pipefail
clinix=${1:-clinix}
out=${2:-demo_work}
data="$out/phantom"
work="$out/work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. synthetic CT phantom (8 training + 2 held-out cases)"
"$clinix" phantom "$data" --cases 8 --test-cases 2 --seed 0 --overwrite

step "2. validate the dataset"
"$clinix" validate "$data"

step "3. fingerprint and CPU plan"
"$clinix" plan "$data" --workdir "$work" --device cpu

step "4. preprocess"
"$clinix" preprocess --workdir "$work"

step "not yet available in this version: train, predict, evaluate"
echo "The demo stops after preprocessing; training, inference and evaluation of the held-out cases"
echo "join it as they land. Outputs so far are in $work (fingerprint.json, plans.json, preprocessed/)."
