"""Knowledge terms: loss functions comparing student, teacher(s) and labels. One file per family."""
from curridistill.knowledge.base import Clock, KnowledgeInputs, KnowledgeTerm, kl_per_sample, standardize
from curridistill.knowledge.registry import KNOWLEDGE, load_all

__all__ = ["KNOWLEDGE", "Clock", "KnowledgeInputs", "KnowledgeTerm", "kl_per_sample", "standardize", "load_all"]
