"""Datasets held in memory as uint8 tensors, splits, and the batched pipeline."""
from curridistill.data.base import ArrayData, Splits, channel_stats, stratified_split
from curridistill.data.registry import DATASETS, DATA_ENV, resolve_root
from curridistill.data import digits  # noqa: F401  (registers "digits")

try:  # loaders for real datasets, one module each
    from curridistill.data import loaders  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["ArrayData", "Splits", "DATASETS", "DATA_ENV", "resolve_root", "channel_stats", "stratified_split"]
