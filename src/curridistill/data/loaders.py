"""Imports every dataset loader module so each registers its names in ``DATASETS``."""
from curridistill.data import cifar, image_folder, mnist, tensors, text  # noqa: F401

__all__ = ["cifar", "image_folder", "mnist", "tensors", "text"]
