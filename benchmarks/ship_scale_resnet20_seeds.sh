#!/bin/bash
# Issue 16 on the CPU-scale protocol (configs/ship_cifar10_scale_resnet20.yaml): the resnet20 student pruned 50%
# against its same-budget unpruned control, seeds 0-2, one after another; rerun it to finish or resume killed runs.
# Then: python benchmarks/prune_vs_scratch.py runs/ship-scale-resnet20-pruned-s{0,1,2} \
#   runs/ship-scale-resnet20-control-s{0,1,2} --json benchmarks/results/prune_vs_unpruned_scale_resnet20.json
cd "$(dirname "$0")/.."
mkdir -p logs
common="--shared-cache --set run.cache_dir=runs/cache-scale --set data.root=../shared/datasets --set teacher.checkpoint=teachers/resnet56_cifar10_cpu_scale.safetensors"
for seed in 0 1 2; do
  for kind in pruned control; do
    out=runs/ship-scale-resnet20-$kind-s$seed
    [ -f $out/report.json ] && continue
    extra=""
    [ $kind = control ] && extra="--set course.1.prune=null --set course.1.name=continue"
    resume=""; [ -d $out ] && resume="--resume"
    .venv/bin/python benchmarks/ship_table.py configs/ship_cifar10_scale_resnet20.yaml --out $out $resume \
      --json benchmarks/results/ship_cifar10_scale_resnet20/${kind}_seed$seed.json $common --set run.seed=$seed $extra \
      > logs/scale-$kind-s$seed.log 2>&1
    echo "$(date -u +%H:%M:%S) $kind seed $seed rc=$?" >> logs/scale_runs.done
  done
done
