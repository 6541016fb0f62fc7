"""The semiring interface: what algorithms ask of a semiring, checked against its definition."""

from __future__ import annotations

import math
import subprocess

import pytest
import torch

from gtn_py import LOG, TROPICAL, LogSemiring, get_semiring
from gtn_py.semiring import KERNEL_LOG, KERNEL_TROPICAL

SEMIRINGS = [LOG, LogSemiring(0.5), TROPICAL]


@pytest.mark.parametrize("sr", SEMIRINGS, ids=str)
def test_idempotence_is_what_plus_does(sr):
    a = torch.tensor([-1.5, 0.0, float("-inf")], dtype=torch.float64)
    assert sr.idempotent == bool(torch.equal(sr.plus2(a, a), a))
    assert sr.backtracks == sr.idempotent


@pytest.mark.parametrize("sr", SEMIRINGS, ids=str)
def test_plus_into_writes_plus(sr):
    x = torch.tensor([[-1.0, float("-inf")], [-2.0, float("-inf")], [0.5, float("-inf")]])
    out = torch.empty(2)
    assert sr.plus_into(x, 0, out) is out
    assert torch.equal(out, sr.plus(x, 0)) and out[1] == float("-inf")


def test_dense_kernels_are_those_the_compiled_sweeps_implement():
    assert (LOG.dense_kernel, TROPICAL.dense_kernel, LogSemiring(2.0).dense_kernel) == \
        (KERNEL_LOG, KERNEL_TROPICAL, None)
    assert TROPICAL.beta == math.inf and get_semiring("viterbi") is TROPICAL


def test_algorithms_never_ask_which_semiring_they_hold():
    """Everything outside gtn_py/semiring.py asks the semiring (idempotent, plus, dense_kernel...)."""
    found = subprocess.run(["git", "grep", "-nE", r"TropicalSemiring|TROPICAL|\.name ==|getattr\(.*beta", "--",
                            "gtn_py", ":!gtn_py/semiring.py"], capture_output=True, text=True)
    if found.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    assert found.stdout == ""
