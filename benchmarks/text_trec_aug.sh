#!/bin/sh
# TREC-6 with the augmented transfer set (configs/text_trec.yaml): the config as written (baseline = the TextCNN
# alone on the same augmented questions, same epochs), then Tang et al.'s logit regression on the same teacher,
# seeds and sentences (its baseline would be identical, so it is not trained again). The fine-tuned teacher and
# its outputs per epoch are cached, so the second run pays only for the students.
set -e
PY=${PY:-.venv/bin/curridistill}
$PY run configs/text_trec.yaml --out runs/text-trec-aug "$@"
$PY run configs/text_trec.yaml --out runs/text-trec-aug-mse --set baseline.enabled=false \
    --set course.0.loss.ce=0.1 --set course.0.loss.kd.weight=0 --set course.0.loss.mse_logits=0.9 "$@"
