"""Confidence intervals of success rates, in one place (a leaf: no dpot import): the Wilson score interval of a
proportion and Newcombe's interval of a difference of two. Closed-loop evaluation, the study's results and the
domain probe use them."""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "newcombe_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of the difference of two independent proportions ``s1/n1 - s2/n2`` (Newcombe 1998,
    method 10, from the two Wilson intervals ``(l_i, u_i)``): ``d - sqrt((p1 - l1)^2 + (u2 - p2)^2)`` to
    ``d + sqrt((u1 - p1)^2 + (p2 - l2)^2)``."""
    p1, p2 = s1 / max(n1, 1), s2 / max(n2, 1)
    (l1, u1), (l2, u2) = wilson_interval(s1, n1, z), wilson_interval(s2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
