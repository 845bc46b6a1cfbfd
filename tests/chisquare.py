"""The chi-square tail for uniformity tests (no scipy in the test environment)."""

from __future__ import annotations

import math


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for chi-square with ``df`` degrees of freedom: the regularized upper
    incomplete gamma Q(df / 2, x / 2), by its series or continued fraction."""
    a, x = df / 2, x / 2
    front = math.exp(-x + a * math.log(x) - math.lgamma(a)) if x > 0 else 0.0
    if x < a + 1:
        term = total = 1 / a
        n = a
        while term > total * 1e-16:
            n += 1
            term *= x / n
            total += term
        return 1 - front * total
    b, c, d = x + 1 - a, 1e300, 1 / (x + 1 - a)
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = 1 / (an * d + b)
        c = b + an / c
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return front * h
