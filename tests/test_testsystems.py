"""The exact entropies of rewl.testsystems against closed forms and against sampling."""
from __future__ import annotations

import numpy as np
import pytest

from rewl.testsystems import _numeric_ln_g, binned_entropy_block, entropy_block


@pytest.mark.parametrize("k", [3, 12, 16])
def test_numerical_convolution_matches_the_closed_forms(k):
    energy, ln_g = _numeric_ln_g(k, 1.0)
    e = np.array([0.3, 0.6, 0.99, 1.2, 1.6, 1.99])
    closed = entropy_block(np.log(e), k, 1.0) - np.log(e)          # ln g where the closed forms hold
    np.testing.assert_allclose(np.interp(e, energy, ln_g), closed, atol=2e-4)
    # continuous where the numerics take over at 2 a^2
    s = entropy_block(np.log([1.99999, 2.00001]), k, 1.0)
    assert abs(s[1] - s[0]) < 1e-3


def test_full_range_entropy_matches_a_histogram_of_uniform_samples():
    k, rng = 12, np.random.default_rng(0)
    u = np.concatenate([np.log((rng.uniform(-1, 1, (250_000, k)) ** 2).sum(axis=1)) for _ in range(8)])
    edges = np.arange(-1.35, 2.35, 0.15)                             # E up to 10.4, past 2 a^2 = 2
    counts, _ = np.histogram(u, edges)
    exact = binned_entropy_block(edges, k, 1.0)
    enough = counts >= 2000                                          # Poisson error <= 0.022
    assert enough.sum() >= 12 and np.exp(edges[1:][enough]).max() > 5.0
    d = np.log(counts[enough]) - exact[enough]
    assert np.max(np.abs(d - d.mean())) < 0.08


def test_beyond_the_reachable_range_is_nan():
    assert np.isnan(entropy_block(np.log([12.5]), 12, 1.0)).all()
    assert np.isnan(entropy_block(np.log([1.5]), 1, 1.0)).all()
