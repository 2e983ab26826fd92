"""Experiments over a config: several seeds, cross-validation folds, comparisons of runs, hyper-parameter search.

- ``run.seeds: [0, 1, 2]`` (or ``curridistill run CONFIG --seeds 0,1,2``): one run per student seed in
  ``RUN_DIR/seed-<s>/`` plus ``aggregate.json`` / ``aggregate.md`` (``experiments.seeds``).
- ``data.cv: {folds: k}``: one run per fold in ``RUN_DIR/fold-<i>/``, aggregated the same way (``experiments.cv``).
- ``curridistill compare RUN_DIR...``: one table across runs and methods (``experiments.compare``).
- ``curridistill tune CONFIG``: Optuna search over the ``tune.space`` of the config
  (``from curridistill.experiments.tune import tune``).
- ``curridistill auto CONFIG --budget 2h``: joint search of recipe, curriculum and student size within a time
  budget (``from curridistill.experiments.auto import auto``).

``api.run`` and ``api.resume`` dispatch to ``run_multi`` / ``resume_multi`` for a parent config.
"""
from curridistill.experiments.seeds import (children, is_multi, parse_seeds, print_aggregate, resume_multi,
                                            run_multi, write_aggregate)

__all__ = ["children", "is_multi", "parse_seeds", "print_aggregate", "resume_multi", "run_multi", "write_aggregate",
           "compare_runs"]


def compare_runs(*args, **kwargs):
    from curridistill.experiments.compare import compare_runs as _compare

    return _compare(*args, **kwargs)
