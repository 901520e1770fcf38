import numpy as np
import pytest

from hf_ext.risk.bootstrap import bootstrap_violation_ratios, resample_sorted
from hf_ext.risk.violation import violation_ratios


class FixedIndices:
    """A stand-in generator that hands out given index matrices, to compare with an explicit sort."""

    def __init__(self, matrices):
        self.matrices = list(matrices)

    def integers(self, low, high, size):
        matrix = self.matrices.pop(0)
        assert matrix.shape == size and matrix.max() < high
        return matrix


def test_resamples_equal_sorting_the_drawn_values():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=31)
    ix, iy = rng.integers(0, 50, (6, 50)), rng.integers(0, 31, (6, 31))
    got = resample_sorted([np.sort(x), np.sort(y)], 6, FixedIndices([ix, iy]))
    # indices into the sorted sample: the resample is the sorted drawn values
    np.testing.assert_array_equal(got[0], np.sort(np.sort(x)[ix], axis=1))
    np.testing.assert_array_equal(got[1], np.sort(np.sort(y)[iy], axis=1))


def test_paired_resamples_draw_the_same_prompts_for_every_model():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = 2 * x + rng.normal(scale=0.1, size=40)
    idx = rng.integers(0, 40, (5, 40))
    orders = [np.argsort(x), np.argsort(y)]
    got = resample_sorted([x[orders[0]], y[orders[1]]], 5, FixedIndices([idx]), paired_order=orders)
    np.testing.assert_array_equal(got[0], np.sort(x[idx], axis=1))
    np.testing.assert_array_equal(got[1], np.sort(y[idx], axis=1))


@pytest.mark.parametrize("order", [1, 2])
def test_bootstrap_ratios_match_a_naive_loop_and_are_seeded(order):
    rng = np.random.default_rng(2)
    samples = [np.sort(rng.normal(i * 0.1, 1, n)) for i, n in enumerate((60, 60, 45))]
    boot = bootstrap_violation_ratios(samples, order=order, n_bootstrap=40, rng=np.random.default_rng(7))
    again = bootstrap_violation_ratios(samples, order=order, n_bootstrap=40, rng=np.random.default_rng(7))
    other = bootstrap_violation_ratios(samples, order=order, n_bootstrap=40, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(boot, again)
    assert not np.allclose(boot[:, 0, 1], other[:, 0, 1])
    # replay the same draws (one chunk: each model's 40 x n index matrix in turn), one round at a time
    replay = np.random.default_rng(7)
    indices = [replay.integers(0, s.size, (40, s.size)) for s in samples]
    for b in range(40):
        drawn = [np.sort(s[index[b]]) for s, index in zip(samples, indices)]
        for i in range(3):
            for j in range(3):
                if i != j:
                    assert boot[b, i, j] == pytest.approx(
                        float(violation_ratios(drawn[i], drawn[j], order)), abs=1e-12
                    )
