#!/usr/bin/env bash
# The README's main job: train the swiss-roll example from its config, then sample from the
# checkpoint alone and draw the samples next to the data.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/swiss_roll
rm -rf "$run"
diffkit fit --config examples/configs/swiss_roll.yaml
diffkit sample --ckpt_path "$run/checkpoints/last.ckpt" --num_samples 2000 --output "$run/samples.pt"
echo "samples: $run/samples.pt  picture: $run/samples.png  metrics: $run/logs/version_0/metrics.csv"
