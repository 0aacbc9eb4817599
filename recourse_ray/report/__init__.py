"""Reports on a sweep's results dataset: aggregates, figures, HTML/Markdown/LaTeX.

The report only reads the results dataset (through ``recourse_ray.store``). Entry
points: ``aggregate`` (cross-seed statistics as a polars DataFrame) and
``build_report`` (everything, written to an output folder). See docs/report.md.
"""

from recourse_ray.report.aggregation import aggregate, final_round_table, initial_scores
from recourse_ray.report._coverage import Coverage, coverage
from recourse_ray.report.documents import build_report

__all__ = ["aggregate", "build_report", "final_round_table", "initial_scores", "coverage", "Coverage"]
