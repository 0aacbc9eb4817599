"""Names, orders and number formats shared by the report's figures and documents."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = [
    "METRIC_LABELS",
    "METRIC_ORDER",
    "SUMMARY_METRICS",
    "DECISIVENESS_DEFINITIONS",
    "SIGNIFICANT_SHARE",
    "metric_label",
    "order_metrics",
    "fmt",
    "fmt_mean_std",
    "slug",
    "is_missing",
    "is_significant",
]

# Metrics of the study's summary figure (SPEC.md section 8), in row order.
SUMMARY_METRICS = ("domain_mmd", "model_mmd_grid", "delta_f1", "disagreement", "decisiveness", "perturbation")

# What the two decisiveness metrics measure, for captions and the definitions paragraph.
DECISIVENESS_DEFINITIONS = (
    "Decisiveness (study text, metric decisiveness) is the mean of (p \u2212 0.5)\u00b2 over the original points, "
    "p the predicted probability of the target class. Decisiveness (reference code, metric decisiveness_code) is "
    "what AlgorithmicRecourseDynamics.jl computes: |\u2016p\u2080 \u2212 0.5\u2016 \u2212 \u2016p\u209c \u2212 0.5\u2016|, "
    "Euclidean norms over the vectors of probabilities on all original points at round 0 and at round t, an "
    "unnormalised change that is 0 at round 0. See docs/metrics.md."
)

METRIC_LABELS = {
    "domain_mmd": "Domain MMD (target class)",
    "domain_mmd_negative": "Domain MMD (non-target class)",
    "model_mmd": "Model MMD (PP, data)",
    "model_mmd_grid": "Model MMD (PP, grid)",
    "disagreement": "Disagreement",
    # two definitions (docs/metrics.md): the study's text and the reference implementation's code
    "decisiveness": "Decisiveness (study text)",
    "decisiveness_code": "Decisiveness (reference code)",
    "delta_decisiveness": "\u0394 decisiveness (study text)",
    "perturbation": "Perturbation",
    "f1": "F1",
    "delta_f1": "\u0394 F1",
    "accuracy": "Accuracy",
    "delta_accuracy": "\u0394 accuracy",
    "recourse_validity": "Recourse validity",
    "recourse_cost": "Recourse cost",
    "recourse_iterations": "Search iterations",
    "n_recourse": "Individuals given recourse",
    "share_recourse": "Share given recourse (cumulative)",
    "time_search_s": "Search time (s)",
    "time_retrain_s": "Retraining time (s)",
    "time_evaluate_s": "Evaluation time (s)",
}
METRIC_ORDER = tuple(METRIC_LABELS)

# A final-round mean is marked significant when at least this share of its seeds has p < 0.05.
SIGNIFICANT_SHARE = 0.5


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def order_metrics(metrics: Iterable[str]) -> list[str]:
    """Known metrics in the study's order, then any others alphabetically."""
    present = set(metrics)
    known = [m for m in METRIC_ORDER if m in present]
    return known + sorted(present - set(known))


def is_missing(value: float | None) -> bool:
    """No value: None (polars' null) or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (no exponent for |x| >= 1e-4); '–' when missing."""
    if is_missing(value):
        return "\u2013"
    if value == 0:
        return "0"
    if abs(value) < 1e-4 or abs(value) >= 1e6:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits, len(str(int(abs(value)))))}g}"


def is_significant(share: float | None) -> bool:
    """The report's significance rule: at least half of the seeds have p < 0.05."""
    return not is_missing(share) and share >= SIGNIFICANT_SHARE


def fmt_mean_std(mean: float | None, std: float | None, share: float | None = None, digits: int = 3) -> str:
    """'mean ± std' (plain text) with a dagger when ``share`` passes the significance rule.

    Both numbers get the same decimals: enough for ``digits`` significant digits of the
    mean (at most 8); means below 1e-4 in magnitude use scientific notation.
    """
    if is_missing(mean):
        return "\u2013"
    if mean != 0 and abs(mean) < 1e-4:
        text = f"{mean:.{digits - 1}e}" + ("" if is_missing(std) else f" \u00b1 {std:.{digits - 1}e}")
    else:
        magnitude = math.floor(math.log10(abs(mean))) if mean != 0 else 0
        decimals = min(8, max(0, digits - 1 - magnitude))
        text = f"{mean:.{decimals}f}" + ("" if is_missing(std) else f" \u00b1 {std:.{decimals}f}")
    return text + ("\u2020" if is_significant(share) else "")


def slug(text: str) -> str:
    """A file-name and HTML-anchor safe version of ``text``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")
    return cleaned or "x"
