#!/usr/bin/env bash
# Does an unfolded CNN learn each synthetic game task? (docs/data.md, "Unfolded CNN learns each task")
#   bash experiments/learn_game_tasks.sh [EPOCHS] [TRAIN_SIZE]     # ~4-6 min per task on 2 cores
set -euo pipefail
epochs=${1:-12}; n=${2:-6000}
for task in lol-gold-fraction lol-gold-int lol-timer-minutes apex-squad-count sot-coin-count sot-timer; do
  foldcnn train --task "$task" --fold 1 --epochs "$epochs" --train-size "$n" --val-size 1000 \
    --test-size 2000 --out "runs/learn-$task" --quiet
done
