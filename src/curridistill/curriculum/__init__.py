"""Data curricula: score difficulty, order the data, pace how much of it is available, weight by loss.

* ``scorers``: per-sample difficulty from teacher/student logits (``SCORERS``, ``score``)
* ``ordering``: easiest-first / hardest-first / class-balanced orders (``order_by_difficulty``)
* ``pacing``: the available fraction at each step (``PACINGS``, ``build_pacing``)
* ``sampler``: the batch sources of the runner (``RandomBatches``, ``PacedBatches``)
* ``selfpaced``: self-paced per-sample loss weights (``SELF_PACED``, ``SelfPacedWeights``)
"""
from curridistill.curriculum.ordering import ORDER_MODES, balanced_interleave, order_by_difficulty
from curridistill.curriculum.pacing import PACING_HELP, PACINGS, PacingSpec, build_pacing, parse_pacing
from curridistill.curriculum.sampler import PacedBatches, RandomBatches, epoch_generator
from curridistill.curriculum.scorers import SCORERS, Scorer, ScoreInputs, score
from curridistill.curriculum.selfpaced import (
    SELF_PACED,
    SELF_PACED_HELP,
    SelfPacedSpec,
    SelfPacedWeights,
    parse_self_paced,
)

__all__ = [
    "ORDER_MODES", "balanced_interleave", "order_by_difficulty",
    "PACING_HELP", "PACINGS", "PacingSpec", "build_pacing", "parse_pacing",
    "PacedBatches", "RandomBatches", "epoch_generator",
    "SCORERS", "Scorer", "ScoreInputs", "score",
    "SELF_PACED", "SELF_PACED_HELP", "SelfPacedSpec", "SelfPacedWeights", "parse_self_paced",
]
