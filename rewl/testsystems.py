"""Systems with an exactly known entropy, to validate the samplers (and an installation) against.

``box_quadratic``: n coordinates uniform in [-a, a]^n, x = ln E1 with E1 the sum of squares of the
first m, y = ln E2 of the other n - m. The blocks are independent, so S(x, y) = S_m(x) + S_{n-m}(y)
with, in u = ln E, S_k(u) = ln g_k(e^u) + u, where
g_k(E) = pi^(k/2) / Gamma(k/2) E^(k/2 - 1) for E <= a^2 (the sphere fits in the box), times
[1 - k I_{1 - a^2/E}((k - 1)/2, 1/2)] for a^2 < E <= 2 a^2 (I the regularised incomplete beta:
the k caps of the sphere outside the box removed; they do not overlap below 2 a^2).

Run ``inputs/box_quadratic.toml``, then ``python -m rewl info RUN`` prints each window's error
against this closed form.
"""
from __future__ import annotations

import numpy as np
from scipy.special import betainc, gammaln


def entropy_block(u: np.ndarray, k: int, a: float) -> np.ndarray:
    """S_k(u) for u = ln E (any shape); nan where E > 2 a^2 (no closed form there)."""
    u = np.asarray(u, dtype=np.float64)
    e = np.exp(u)
    s = (k / 2) * np.log(np.pi) - gammaln(k / 2) + (k / 2) * u
    corr = np.ones_like(e)
    outer = e > a * a
    if k > 1:
        corr[outer] = 1 - k * betainc((k - 1) / 2, 0.5, 1 - a * a / e[outer])
    else:
        corr[outer] = np.nan
    corr[e > 2 * a * a] = np.nan
    return s + np.log(corr)


def binned_entropy_block(edges: np.ndarray, k: int, a: float, samples: int = 400) -> np.ndarray:
    """ln of the mean of e^S over each bin [edges[i], edges[i+1]): what Wang-Landau estimates. (bins,)"""
    out = np.empty(len(edges) - 1)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        u = lo + (hi - lo) * (np.arange(samples) + 0.5) / samples
        s = entropy_block(u, k, a)
        top = np.max(s)
        out[i] = top + np.log(np.mean(np.exp(s - top)))
    return out


def box_entropy(x_edges: np.ndarray, y_edges: np.ndarray, n: int, m: int, a: float) -> np.ndarray:
    """Exact binned S(x, y) = S_m(x) + S_{n-m}(y): (n_x, n_y); nan outside the exact region."""
    return binned_entropy_block(x_edges, m, a)[:, None] + binned_entropy_block(y_edges, n - m, a)[None, :]


def max_error_after_constant(estimate: np.ndarray, exact: np.ndarray, mask: np.ndarray) -> float:
    """Max |estimate - exact - c| over mask, with c the least-squares constant (the mean difference)."""
    diff = (estimate - exact)[mask]
    return float(np.max(np.abs(diff - diff.mean())))
