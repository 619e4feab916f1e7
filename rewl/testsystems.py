"""Systems with an exactly known entropy, to validate the samplers (and an installation) against.

``box_quadratic``: n coordinates uniform in [-a, a]^n, x = ln E1 with E1 the sum of squares of the
first m, y = ln E2 of the other n - m. The blocks are independent, so S(x, y) = S_m(x) + S_{n-m}(y)
with, in u = ln E, S_k(u) = ln g_k(e^u) + u, where
g_k(E) = pi^(k/2) / Gamma(k/2) E^(k/2 - 1) for E <= a^2 (the sphere fits in the box), times
[1 - k I_{1 - a^2/E}((k - 1)/2, 1/2)] for a^2 < E <= 2 a^2 (I the regularised incomplete beta:
the k caps of the sphere outside the box removed; they do not overlap below 2 a^2). Beyond 2 a^2,
up to E = k a^2, g_k is the k-fold convolution of the density of one x^2 (``_numeric_ln_g``),
computed by FFT on a fine grid of E and checked against the closed forms where both hold.

Run ``inputs/box_quadratic.toml``, then ``rewl info RUN`` prints each window's error
against this closed form.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import betainc, gammaln

# grid step of the numerical convolution, in units of a^2: ln g is then exact to about 1e-5
_STEP = 1e-5
# below this fraction of its maximum the FFT's rounding dominates the convolved density
_RELIABLE = 1e-11


@lru_cache(maxsize=16)
def _numeric_ln_g(k: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """ln g_k(E) on a grid of E in (0, k a^2]: (E (N,), ln g (N,)), nan where unreliable.

    The masses of one x^2 in bins [j h, (j + 1) h) are exact (sqrt(j + 1) - sqrt(j)) sqrt(h) / a;
    the distribution of the sum of k of them is their k-fold convolution (one FFT), placed at
    h (J + k/2) (each x^2 lies on average half a bin above its bin's lower edge)."""
    h = _STEP * a * a
    n1 = int(round(1 / _STEP))
    masses = np.diff(np.sqrt(np.arange(n1 + 1) * h)) / a                # (n1,), sums to 1
    n = k * n1
    density = np.fft.irfft(np.fft.rfft(masses, n=n) ** k, n=n) / h      # of E, for x uniform in the box
    energy = h * (np.arange(n) + k / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_g = np.where(density > _RELIABLE * density.max(), np.log(density), np.nan) + k * np.log(2 * a)
    return energy, ln_g


def entropy_block(u: np.ndarray, k: int, a: float) -> np.ndarray:
    """S_k(u) for u = ln E (any shape): closed forms up to E = 2 a^2 (a^2 for k = 1), the
    numerical convolution beyond; nan where E > k a^2 or the numerics are not reliable."""
    u = np.asarray(u, dtype=np.float64)
    e = np.exp(u)
    s = (k / 2) * np.log(np.pi) - gammaln(k / 2) + (k / 2) * u
    corr = np.ones_like(e)
    outer = e > a * a
    if k > 1:
        corr[outer] = 1 - k * betainc((k - 1) / 2, 0.5, 1 - a * a / e[outer])
    else:
        corr[outer] = np.nan
    closed = e <= (2 if k > 1 else 1) * a * a
    out = np.full_like(e, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[closed] = (s + np.log(corr))[closed]
    far = ~closed & (e <= k * a * a)
    if far.any():
        energy, ln_g = _numeric_ln_g(k, float(a))
        out[far] = np.interp(e[far], energy, ln_g, right=np.nan) + u[far]
    return out


def binned_entropy_block(edges: np.ndarray, k: int, a: float, samples: int = 400, partial: bool = False) -> np.ndarray:
    """ln of the mean of e^S over each bin [edges[i], edges[i+1]): what Wang-Landau estimates. (bins,)

    A bin that reaches past the limit E = k a^2 is nan, or with `partial` the ln of the mean over
    the whole bin of e^S, counted 0 past the limit (what a whole-bin estimate holds there)."""
    out = np.empty(len(edges) - 1)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        u = lo + (hi - lo) * (np.arange(samples) + 0.5) / samples
        s = entropy_block(u, k, a)
        if partial and np.isfinite(s).any():
            s = np.where(np.isfinite(s), s, -np.inf)
        top = np.max(s)
        out[i] = top + np.log(np.mean(np.exp(s - top)))
    return out


def box_entropy(x_edges: np.ndarray, y_edges: np.ndarray, n: int, m: int, a: float, partial: bool = False) -> np.ndarray:
    """Exact binned S(x, y) = S_m(x) + S_{n-m}(y): (n_x, n_y); nan where the numerics are not
    reliable, and where a bin reaches past E = k a^2 (partly unreachable) unless `partial`
    (``binned_entropy_block``)."""
    return (binned_entropy_block(x_edges, m, a, partial=partial)[:, None]
            + binned_entropy_block(y_edges, n - m, a, partial=partial)[None, :])


def max_error_after_constant(estimate: np.ndarray, exact: np.ndarray, mask: np.ndarray) -> float:
    """Max |estimate - exact - c| over mask, with c the least-squares constant (the mean difference)."""
    diff = (estimate - exact)[mask]
    return float(np.max(np.abs(diff - diff.mean())))
