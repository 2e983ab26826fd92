#!/bin/sh
# The full-data CIFAR-10 accuracy table (issue 14): resnet20 teacher (committed) -> resnet8, 15 epochs,
# 3 seeds per row. Resumable: run the same command again and finished rows/seeds are read back; the JSON
# and Markdown are rewritten after every row ("complete": false until the last). Several CPU-hours:
#   nohup sh benchmarks/cpu_full_table.sh > logs/cpu_full_table.log 2>&1 &
# Afterwards, more seeds for kd and the two best rows (only the new seeds train), e.g.
#   sh benchmarks/cpu_full_table.sh --more-seeds kd,dkd,at=0,1,2,3,4
set -e
PY=${PY:-.venv/bin/python}
exec "$PY" benchmarks/accuracy_table.py configs/protocol/cifar10_cpu_full.yaml --seeds 0,1,2 \
    --rows "kd,dkd,curriculum+dkd,curriculum+kd,annealing-kd,at,ctkd,ctkd (instance),dist,kd+ls,self-paced kd" \
    --set data.root=../shared/datasets \
    --set teacher.checkpoint=teachers/resnet20_cifar10_cpu_full.safetensors \
    --out runs/accuracy-cpu-full --json benchmarks/results/accuracy_resnet20_resnet8_cpu_full.json "$@"
