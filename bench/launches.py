"""Count the torch operations that launch work (and the host syncs) of one CTC step along the
CUDA code path, on a machine without a GPU.

    python bench/launches.py [--align] [B T S V]

On CUDA, small problems are bound by the host launching kernels and waiting at syncs, not by
the GPU. This runs ``ctc_loss`` forward + backward (``--align``: ``viterbi_align`` of the CTC
graphs) on CPU tensors with gtn_py's CUDA branches taken: the Triton kernels are selected (a
``TritonKernels`` for CPU tensors, as for the interpreter, given to ``dense_kernels``) but stubbed
out, so they cost nothing and count as the launches they are; everything else runs as it would on CUDA. A
``TorchDispatchMode`` records each operation that is not a view or an allocation, under the
gtn_py function that issued it. Syncs are the operations that read a device value on the host
(``.item()``/``int()``, ``nonzero``, ``unique``); on CUDA the emissions' NaN check adds one
reduction and one sync. The totals' values are garbage with the kernels stubbed: only counts.
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gtn_py  # noqa: E402
from gtn_py.ops import dense  # noqa: E402
from gtn_py.ops.dense.triton_kernels import TritonKernels  # noqa: E402

NO_LAUNCH = {"reshape", "slice", "view", "detach", "transpose", "select", "_unsafe_view", "t", "unsqueeze",
             "squeeze", "as_strided", "alias", "expand", "empty", "empty_like", "new_empty", "empty_strided",
             "lift_fresh", "permute"}
SYNCS = {"_local_scalar_dense", "nonzero", "_unique2", "is_nonzero"}


class _Stub:
    """A Triton kernel that launches nothing (``kernel[grid](...)``) and counts its launches."""

    launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            _Stub.launches += 1
        return launch


class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.sites: collections.Counter = collections.Counter()
        self.syncs: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name not in NO_LAUNCH:
            site = next((f"{frame.filename.split('gtn_py/')[-1]}:{frame.name}"
                         for frame in reversed(traceback.extract_stack()) if "/gtn_py/" in frame.filename), "?")
            self.sites[site] += 1
            if name in SYNCS:
                self.syncs[site] += 1
        return func(*args, **(kwargs or {}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--align", action="store_true", help="count viterbi_align instead of ctc_loss")
    parser.add_argument("shape", nargs="*", type=int, default=[32, 500, 50, 30], help="B T S V")
    opts = parser.parse_args()
    batch, frames, target_length, vocab = opts.shape
    stubs = TritonKernels("cpu", kernels=(_Stub(), _Stub(), _Stub()))  # the CUDA path, launching nothing
    gen = torch.Generator().manual_seed(0)
    log_probs = torch.randn(frames, batch, vocab, generator=gen).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, vocab, (batch, target_length), generator=gen)
    lengths, target_lengths = torch.full((batch,), frames), torch.full((batch,), target_length)

    def step():
        if opts.align:
            gtn_py.viterbi_align(gtn_py.ctc_graph(targets), log_probs.detach().transpose(0, 1))
        else:
            gtn_py.ctc_loss(log_probs, targets, lengths, target_lengths, reduction="sum").backward()
            log_probs.grad = None

    with dense.dense_kernels(stubs):
        step()
        recorder = Recorder()
        _Stub.launches = 0
        with recorder:
            step()
    what = "viterbi_align" if opts.align else "ctc_loss forward + backward"
    print(f"{what}, B={batch} T={frames} S={target_length} V={vocab}: "
          f"{sum(recorder.sites.values())} launching torch operations + {_Stub.launches} Triton kernels, "
          f"{sum(recorder.syncs.values())} host syncs")
    for site, count in recorder.sites.most_common():
        syncs = f"  ({recorder.syncs[site]} syncs)" if recorder.syncs[site] else ""
        print(f"  {count:5d}  {site}{syncs}")


if __name__ == "__main__":
    main()
