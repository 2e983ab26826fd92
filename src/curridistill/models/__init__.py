"""Model zoo (plain torch) and the registry. Importing this package registers every zoo model."""
from curridistill.models.registry import MODELS, build_model, count_params
from curridistill.models import small  # noqa: F401  (registers mlp, cnn)
from curridistill.models import hf, text  # noqa: F401  (registers hf, text-cnn, text-bilstm, text-transformer)

try:  # zoo families land one file each; import those present
    from curridistill.models import zoo  # noqa: F401
except ImportError:  # pragma: no cover - zoo package optional during bring-up
    pass

__all__ = ["MODELS", "build_model", "count_params"]
