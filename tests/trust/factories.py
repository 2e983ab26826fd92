"""Model factories named as ``module:callable`` by the trust tests (configs are code; checkpoints are data)."""
from torch import nn

SHARED = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def tiny(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, num_classes))


def shared(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Hands out one module object to every caller: the baseline and the student would be the same model."""
    return SHARED
