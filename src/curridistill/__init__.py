"""curridistill: knowledge distillation driven by curriculum learning.

The public API; the CLI (``curridistill``) is a thin layer over it.

>>> from curridistill import load_config, run
>>> report = run(load_config("configs/quickstart.yaml"), out="runs/quickstart")

Your own modules and tensors (see the README, "Python API"):

>>> from curridistill import distill, evaluate, predict
>>> result = distill(my_student, teacher=my_teacher, train=(x, y), test=(x_test, y_test))
>>> evaluate(result.student, (x_test, y_test))["accuracy"], predict(result.student, x_test[:4], top_k=3)

The names below are the public surface; everything else may change between versions.
"""
from curridistill.api import (  # api.export: see curridistill.export (a subpackage of the same name)
    build_report, distill, evaluate, predict, prepare, resume, run,
)
from curridistill.config import Config, load_config
from curridistill.errors import NonFiniteLoss, UserError
from curridistill.knowledge import KNOWLEDGE, KnowledgeInputs, KnowledgeTerm
from curridistill.models import MODELS, build_model
from curridistill.models.checkpoint import load_model, load_weights, save_model
from curridistill.objects import Result
from curridistill.schedules import build_schedule
from curridistill.train.callbacks import StopAfterEpochs, StopRequested

__version__ = "0.1.0"

__all__ = [
    # run a course: from a config (names), or from your own modules and data (objects)
    "run", "resume", "distill", "Result", "prepare", "build_report",
    # hooks into training: callbacks=[fn(record), StopAfterEpochs(n)]
    "StopAfterEpochs", "StopRequested",
    # use a trained model: metrics on test data, top-k predictions
    "evaluate", "predict",
    # configuration
    "Config", "load_config",
    # models and checkpoints
    "MODELS", "build_model", "load_model", "load_weights", "save_model",
    # extension points: knowledge terms and schedules
    "KNOWLEDGE", "KnowledgeInputs", "KnowledgeTerm", "build_schedule",
    # errors
    "UserError", "NonFiniteLoss",
]
