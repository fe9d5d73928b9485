"""Run analysis: readers (dpot, W&B offline/online, TensorBoard), summaries, diagnosis rules, proposals,
Markdown/HTML reports and comparisons (``dpot report | compare | propose``)."""

from dpot.analysis.analyze import Analysis, analyze
from dpot.analysis.readers import Run, open_run
from dpot.analysis.rules import load_rules

__all__ = ["Analysis", "Run", "analyze", "load_rules", "open_run"]
