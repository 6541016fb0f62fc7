import contextlib
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

# The tests are many small problems, for which torch's OpenMP workers cost more than they give
# (far more on a busy machine); `make test` also sets OMP_NUM_THREADS=1 for subprocesses.
torch.set_num_threads(1)

settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def choose_kernels():
    """``choose_kernels("torch")`` (or "auto", "numba", "triton"): the kernels of the dense sweeps
    for the rest of the test (gtn_py.ops.dense.dense_kernels, undone when the test ends)."""
    from gtn_py.ops.dense import dense_kernels

    with contextlib.ExitStack() as stack:
        yield lambda choice: stack.enter_context(dense_kernels(choice))
