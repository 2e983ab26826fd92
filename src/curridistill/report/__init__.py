"""Plots, a Markdown report and a self-contained HTML report of a run directory."""
from curridistill.report.render import write_report

__all__ = ["write_report"]
