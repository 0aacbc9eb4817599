"""Small statistics helpers for the report (no scipy in the dependency set).

The confidence intervals of the report are Student-t intervals across seeds, so the
report needs two-sided t critical values for integer degrees of freedom. For integer
``df`` the t distribution function has a closed form as a finite trigonometric sum
(Abramowitz & Stegun 26.7.3-26.7.4); we invert it by bisection, which is exact to
floating-point precision and fast for the small ``df`` a sweep produces.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = ["t_central_probability", "t_critical"]

# Above this many degrees of freedom the finite sum gets long; the Cornish-Fisher
# expansion of the t quantile in 1/df is accurate to better than 1e-7 there.
_EXPANSION_FROM_DF = 400


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for T ~ Student-t with ``df`` degrees of freedom.

    Args:
        t: non-negative threshold.
        df: degrees of freedom, an int >= 1.

    Returns:
        The central probability, in [0, 1).
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"The 'df' parameter of t_central_probability must be an int in the range [1, inf). Got {df!r} instead.")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    if df == 1:
        return 2.0 * theta / math.pi
    cos2 = math.cos(theta) ** 2
    # Both parities share one recursion: coefficient c_{j+2} = c_j * (j + 1) / (j + 2),
    # starting at power 1 (odd df) or 0 (even df), up to power df - 2.
    power = 1 if df % 2 else 0
    term = math.cos(theta) if df % 2 else 1.0
    total = term
    while power + 2 <= df - 2:
        term *= cos2 * (power + 1) / (power + 2)
        power += 2
        total += term
    if df % 2:
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    return math.sin(theta) * total


def _normal_quantile(p: float) -> float:
    """Standard normal quantile by bisection on erf (only used for large df)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=1024)
def t_critical(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value: the t with P(|T| <= t) = ``confidence``.

    Args:
        df: degrees of freedom, an int >= 1 (n_seeds - 1 for an interval across seeds).
        confidence: central coverage in (0, 1), 0.95 by default.

    Returns:
        The critical value, e.g. 12.706 for df = 1 and 2.776 for df = 4 at 95 %.
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"The 'df' parameter of t_critical must be an int in the range [1, inf). Got {df!r} instead.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"The 'confidence' parameter of t_critical must be a float in the range (0, 1). Got {confidence!r} instead.")
    if df >= _EXPANSION_FROM_DF:
        z = _normal_quantile(0.5 + confidence / 2.0)
        g1 = (z**3 + z) / 4.0
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
        return z + g1 / df + g2 / df**2 + g3 / df**3
    lo, hi = 0.0, 1.0
    while t_central_probability(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_central_probability(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * hi:
            break
    return 0.5 * (lo + hi)
