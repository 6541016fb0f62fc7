"""CTC forward+backward: gtn_py (general dense intersection) vs torch.nn.functional.ctc_loss vs k2.

    python bench/ctc.py [--repeats 5] [--device cpu|cuda] [--profile]

Shapes (B, T, target length, V): (32, 500, 50, 30) and (32, 150, 35, 10001); log-probabilities
``[T, B, V]`` are a leaf that requires grad; reduction "sum". Times are medians over repeats after
a warm-up (numba kernels compiled, caches loaded).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one step minus what was
allocated before it. On the CPU, each implementation runs in a fresh subprocess with glibc's
mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_=65536``, so every large tensor is its own
mapping, returned to the OS when freed and never hidden in a reused heap); after a warm-up
step the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) and the step's extra
memory is ``VmHWM - VmRSS`` (peak resident set during the step minus resident set before it).

k2 (``k2.ctc_graph`` + ``k2.ctc_loss``, output_beam 10) runs in the Python 3.10 k2 environment
(``/root/.cache/gtn_py/k2-py310/bin/python``, see bench/k2_ctc_timing.py) when it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gtn_py  # noqa: E402

SHAPES = [(32, 500, 50, 30), (32, 150, 35, 10001)]
K2_PYTHON = Path("/root/.cache/gtn_py/k2-py310/bin/python")
IMPLEMENTATIONS: Dict[str, Callable] = {"torch": F.ctc_loss, "gtn_py": gtn_py.ctc_loss}


def inputs(shape, device):
    batch, frames, target_length, vocab = shape
    gen = torch.Generator().manual_seed(0)
    log_probs = torch.randn(frames, batch, vocab, generator=gen).log_softmax(-1).to(device).requires_grad_()
    targets = torch.randint(1, vocab, (batch, target_length), generator=gen).to(device)
    input_lengths = torch.full((batch,), frames, dtype=torch.long)
    target_lengths = torch.full((batch,), target_length, dtype=torch.long)
    return log_probs, targets, input_lengths, target_lengths


def step(name, log_probs, targets, input_lengths, target_lengths):
    loss = IMPLEMENTATIONS[name](log_probs, targets, input_lengths, target_lengths, reduction="sum")
    loss.backward()
    log_probs.grad = None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(name, shape, device, repeats):
    args = inputs(shape, device)
    step(name, *args)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step(name, *args)
        sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile(shape, device, steps=3):
    """torch.profiler's table of gtn_py's steps: which operations and launches take the time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    args = inputs(shape, device)
    step("gtn_py", *args)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step("gtn_py", *args)
            sync(device)
    print(f"gtn_py, {steps} steps of B={shape[0]} T={shape[1]} S={shape[2]} V={shape[3]} on {device}")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))


def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(name, shape, device):
    """The step's peak memory above what was allocated before it (see the module docstring)."""
    args = inputs(shape, device)
    step(name, *args)
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(name, *args)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM to the current RSS
    before = status_kb("VmRSS")
    step(name, *args)
    return 1024 * (status_kb("VmHWM") - before)


def memory_mb(name, shape, device):
    if device.type == "cuda":
        return peak_extra_bytes(name, shape, device) / 2**20
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, "--probe", name, ",".join(map(str, shape)), "--device", "cpu"],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["bytes"] / 2**20


def k2_ms(shape, device, repeats):
    if not K2_PYTHON.exists():
        return None, f"not available ({K2_PYTHON} does not exist)"
    script = Path(__file__).resolve().parent / "k2_ctc_timing.py"
    cmd = [str(K2_PYTHON), str(script), *map(str, shape), str(repeats), str(device)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return None, "not available (" + (out.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["ms"], f"k2 {result['k2']}, torch {result['torch']}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="profile gtn_py on the first shape instead")
    parser.add_argument("--probe", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    device = torch.device(opts.device)
    if opts.profile:
        profile(SHAPES[0], device)
        return
    if opts.probe:
        name, shape = opts.probe[0], tuple(int(x) for x in opts.probe[1].split(","))
        print(json.dumps({"bytes": peak_extra_bytes(name, shape, device)}))
        return
    print(f"CTC forward+backward, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {opts.repeats}")
    for shape in SHAPES:
        b, t, s, v = shape
        ms = {name: time_ms(name, shape, device, opts.repeats) for name in IMPLEMENTATIONS}
        mem = {name: memory_mb(name, shape, device) for name in IMPLEMENTATIONS}
        k2_time, k2_note = k2_ms(shape, device, opts.repeats)
        print(f"\nB={b} T={t} S={s} V={v}")
        for name in IMPLEMENTATIONS:
            print(f"  {name:7s} {ms[name]:9.1f} ms   peak extra memory {mem[name]:8.1f} MiB")
        ratio = ms["gtn_py"] / ms["torch"]
        mem_ratio = mem["gtn_py"] / max(mem["torch"], 1e-9)
        print(f"  gtn_py / torch time {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}), "
              f"memory {mem_ratio:.2f}x (target <= 1.5x: {'met' if mem_ratio <= 1.5 else 'NOT met'})")
        if k2_time is None:
            print(f"  k2: {k2_note}")
        else:
            speedup = k2_time / ms["gtn_py"]
            print(f"  k2      {k2_time:9.1f} ms   ({k2_note}); k2 / gtn_py {speedup:.2f}x "
                  f"(target >= 3x: {'met' if speedup >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
