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


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("layout", ["independent", "paired", "clustered"])
def test_tied_samples_resampled_by_counts_match_the_expanded_resamples(monkeypatch, order, layout):
    # few distinct values (a 0/1 or graded metric) take the counts path; forcing the expanded path must give the same
    # ratios from the same seed, with more rounds than one chunk holds
    import hf_ext.risk.bootstrap as bootstrap
    from hf_ext.risk.paired import check_clusters

    rng = np.random.default_rng(11)
    n = 300
    raw = [rng.choice([0.0, 0.5, 1.0, 2.0], n, p=[0.4, 0.2, 0.3, 0.1]) for _ in range(4)]
    raw[1] = np.where(rng.random(n) < 0.8, raw[0], raw[1])  # correlated, as paired models are
    sorted_samples = [np.sort(values) for values in raw]
    paired_order = None if layout == "independent" else [np.argsort(values, kind="stable") for values in raw]
    codes = check_clusters(np.repeat(np.arange(n // 3), 3), n) if layout == "clustered" else None
    kwargs = dict(order=order, n_bootstrap=450, paired_order=paired_order, cluster_codes=codes)
    assert bootstrap._steps(sorted_samples) is not None
    by_counts = bootstrap_violation_ratios(sorted_samples, rng=np.random.default_rng(3), **kwargs)
    monkeypatch.setattr(bootstrap, "_STEP_SHARE", 0.0)
    assert bootstrap._steps(sorted_samples) is None
    expanded = bootstrap_violation_ratios(sorted_samples, rng=np.random.default_rng(3), **kwargs)
    np.testing.assert_allclose(by_counts, expanded, atol=1e-12)


def test_step_violation_ratios_equal_the_ratios_of_the_expanded_samples():
    from hf_ext.risk.violation import step_violation_ratios

    rng = np.random.default_rng(12)
    for _ in range(200):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        levels = np.cumsum(rng.random(5)) * rng.choice([-1, 1])
        x, y = np.sort(rng.choice(np.sort(levels)[: rng.integers(1, 6)], n)), np.sort(rng.choice(levels, m))
        (ux, cx), (uy, cy) = np.unique(x, return_counts=True), np.unique(y, return_counts=True)
        for order in (1, 2):
            expected = float(violation_ratios(x, y, order=order))
            assert float(step_violation_ratios(ux, cx[None], uy, cy[None], order=order)[0]) == pytest.approx(
                expected, abs=1e-9
            )
