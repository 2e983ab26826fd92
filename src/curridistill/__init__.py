"""curridistill: knowledge distillation driven by curriculum learning.

The public API; the CLI (``curridistill``) is a thin layer over it.

>>> from curridistill import load_config, run
>>> report = run(load_config("configs/quickstart.yaml"), out="runs/quickstart")
"""
from curridistill.api import build_report, prepare, resume, run
from curridistill.config import Config, load_config
from curridistill.errors import NonFiniteLoss, UserError
from curridistill.knowledge import KNOWLEDGE, KnowledgeInputs, KnowledgeTerm
from curridistill.models import MODELS, build_model
from curridistill.models.checkpoint import load_model, save_model
from curridistill.schedules import build_schedule

__version__ = "0.1.0"

__all__ = [
    "Config", "KNOWLEDGE", "KnowledgeInputs", "KnowledgeTerm", "MODELS", "NonFiniteLoss", "UserError",
    "build_model", "build_report", "build_schedule", "load_config", "load_model", "prepare", "resume", "run",
    "save_model",
]
