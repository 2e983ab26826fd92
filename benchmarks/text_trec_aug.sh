#!/bin/sh
# TREC-6 with the augmented transfer set (configs/text_trec.yaml): the config as written (Tang et al.'s logit
# regression, ce 0.1 + mse_logits 0.9; baseline = the TextCNN alone on the same augmented questions, same
# epochs), then Hinton KD (ce 0.5 + kd 0.5, T=4) on the same teacher, seeds and sentences (its baseline would be
# identical, so it is not trained again). The fine-tuned teacher and its outputs per epoch are cached, so the
# second run pays only for the students; a third run of the config as written is the cached-teacher rerun.
# Each run's wall time is printed at its end.
set -e
PY=${PY:-.venv/bin/curridistill}
timed() {
    label=$1; shift
    start=$(date +%s)
    "$@"
    echo "$label: $(( $(date +%s) - start )) s"
}
timed "first run (teacher fine-tune included)" $PY run configs/text_trec.yaml --out runs/text-trec-aug "$@"
timed "kd variant (students only)" $PY run configs/text_trec.yaml --out runs/text-trec-aug-kd \
    --set baseline.enabled=false --set course.0.loss.ce=0.5 --set course.0.loss.mse_logits=0 \
    --set course.0.loss.kd.weight=0.5 --set course.0.loss.kd.temperature=4 "$@"
timed "cached-teacher rerun" $PY run configs/text_trec.yaml --out runs/text-trec-rerun "$@"
