"""The statistical assertions of the suite, made measurable across machines.

A test that trains, samples or resamples and then compares a statistic with a threshold holds only with the margin it
has on every machine: other CPUs run other kernels (`ATEN_CPU_CAPABILITY`), other thread counts sum in another order,
and the trained weights differ in the last bits. Such a test takes its seed from `SEED` and states each threshold
through `expect`, which asserts it and, when `HF_EXT_FIGURES` names a file, appends the figure, the threshold and the
test to that file (one JSON object a line). `benchmarks/portability.py` runs these tests over a grid of seeds, thread
counts and kernel families and reports each threshold against the worst case seen; `make test-portable` runs them
under the foreign kernel families.
"""

from __future__ import annotations

import json
import math
import os


SEED = int(os.environ.get("HF_EXT_TEST_SEED", "0"))
"""The seed of every training / sampling / resampling run whose outcome a test asserts (0 unless the grid sets it)."""


def expect(name: str, value: float, *, at_least: float | None = None, at_most: float | None = None) -> None:
    """Assert `at_least <= value <= at_most` (either bound may be absent) and record the figure for the grid."""
    if at_least is None and at_most is None:
        raise ValueError(f"expect({name!r}) needs at_least or at_most")
    value = float(value)
    log = os.environ.get("HF_EXT_FIGURES")
    if log:
        record = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" (")[0],
            "figure": name,
            "value": value,
            "at_least": at_least,
            "at_most": at_most,
        }
        # one write of one line in append mode: lines from concurrent pytest-xdist workers do not interleave
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    assert not math.isnan(value), f"{name} is NaN"
    if at_least is not None:
        assert value >= at_least, f"{name} = {value:.4g}, expected >= {at_least:.4g}"
    if at_most is not None:
        assert value <= at_most, f"{name} = {value:.4g}, expected <= {at_most:.4g}"
