"""Experiments over a config: several seeds, cross-validation folds, comparisons of runs, hyper-parameter search.

- ``run.seeds: [0, 1, 2]`` (or ``curridistill run CONFIG --seeds 0,1,2``): one run per student seed in
  ``RUN_DIR/seed-<s>/`` plus ``aggregate.json`` / ``aggregate.md`` (``curridistill.multirun``).
- ``data.cv: {folds: k}``: one run per fold in ``RUN_DIR/fold-<i>/``, aggregated the same way (the folds are
  cut by ``data.folds``).
- ``curridistill compare RUN_DIR...``: one table across runs and methods (``experiments.compare``).
- ``curridistill tune CONFIG``: Optuna search over the ``tune.space`` of the config
  (``from curridistill.experiments.tune import tune``).
- ``curridistill auto CONFIG --budget 2h``: joint search of recipe, curriculum and student size within a time
  budget (``from curridistill.experiments.auto import auto``).

``api.run`` and ``api.resume`` run a parent config's children (``api.run_multi``) with the children and the
aggregate defined here; nothing in this package calls back up into ``api`` except the searches (tune, auto),
which sit above it.
"""
from curridistill.multirun import children, is_multi, parse_seeds, print_aggregate, write_aggregate

__all__ = ["children", "is_multi", "parse_seeds", "print_aggregate", "write_aggregate"]
