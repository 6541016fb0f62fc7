"""Both recipes' training under torchrun: two processes (gloo on the CPU, also where CUDA is
there) share each step's global batch and end with the weights of one process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_check_reader import TRAIN_ARGS
from test_speech_models import corpus, write_corpus

from recipes import common

ROOT = Path(__file__).resolve().parents[1]


def check_reader_args(tmp_path: Path) -> list[str]:
    return ["recipes.check_reader", "train", *TRAIN_ARGS]


def speech_args(tmp_path: Path) -> list[str]:
    data = write_corpus(tmp_path / "corpus", corpus(16))
    return ["recipes.speech_digits", "train", "--corpus", str(data), "--model", "hybrid", "--option", "states=2",
            "--steps", "2", "--batch-size", "4", "--channels", "8", "--context", "1", "--hidden", "0",
            "--stride", "2", "--dropout", "0", "--valid-size", "0", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe_args", [check_reader_args, speech_args], ids=["check_reader", "speech_digits"])
def test_two_process_gloo_run_matches_one_process(tmp_path: Path, recipe_args: Callable[[Path], list[str]]) -> None:
    args = [*recipe_args(tmp_path), "--threads", "1", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        run = subprocess.run([sys.executable, *launcher, "-m", *args, "--out", str(tmp_path / name)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
    one = common.load_checkpoint(tmp_path / "one" / common.CHECKPOINT)["model"]
    two = common.load_checkpoint(tmp_path / "two" / common.CHECKPOINT)["model"]
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=1e-5, rtol=1e-4)
