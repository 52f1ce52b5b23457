"""The compiled row kernel of statistics mode (``row_stats.c``): build, cache, load, call.

The kernel turns a block of raw scores into probabilities in place and returns every row's
statistics in four passes over the row while it is in cache (see the C file). It is built on first
use with the system C compiler into ``$ATTNSCOPE_CACHE/kernels/`` (a file named by the hash of the
source, the flags and the compiler), then loaded with ctypes. A ctypes call releases the GIL, so row
ranges run in parallel on Python threads, as many as ``torch.get_num_threads()``.

Without a C compiler, or with ``ATTNSCOPE_NATIVE=0``, :func:`kernel` returns None and statistics mode
takes the general path (SDPA for the output, statistics recomputed from the scores with torch
operations): the same numbers, at several times the cost (``benchmarks/bench_fused.py``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("row_stats.c")
# Column order of the kernel's per-row output (enum in row_stats.c).
KERNEL_STATS = ("entropy", "max", "argmax", "sparsity", "effective_positions", "first_token_mass",
                "mean_distance", "allowed_keys")
# The IEEE-relaxed subset of -ffast-math that lets the compiler vectorise the reductions; unlike
# -ffast-math it does not link crtfastmath.o, which would switch the whole process to flush-to-zero.
_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
          "-fassociative-math", "-ffinite-math-only"]
_ARCH_FLAGS = (["-march=native"], [])  # the first that compiles is used


def _cache_dir() -> Path:
    from ...models import attnscope_cache_dir

    return attnscope_cache_dir() / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cc


def build(cc: str, out_dir: Path) -> Path:
    """Compile the kernel with ``cc`` into ``out_dir`` (atomically; reused when already there)."""
    source = SOURCE.read_bytes()
    errors = []
    for arch in _ARCH_FLAGS:
        flags = _FLAGS + arch
        digest = hashlib.sha256(source + " ".join(flags).encode() + _compiler_id(cc).encode()).hexdigest()[:16]
        target = out_dir / f"row_stats-{digest}.so"
        if target.exists():
            return target
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        proc = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            os.replace(tmp, target)  # atomic: a concurrent process sees the old state or the whole file
            return target
        os.unlink(tmp)
        errors.append(f"{cc} {' '.join(flags)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError("could not compile the statistics kernel:\n" + "\n".join(errors))


@functools.cache
def kernel():
    """The loaded C function, or None (no compiler, a failed build, or ``ATTNSCOPE_NATIVE=0``)."""
    if os.environ.get("ATTNSCOPE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cc = _compiler()
    if cc is None:
        warnings.warn("attnscope: no C compiler found (set CC or install gcc): statistics mode takes the slower "
                      "general path", RuntimeWarning, stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(build(cc, _cache_dir())))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        warnings.warn(f"attnscope: statistics kernel unavailable, statistics mode takes the slower general path "
                      f"({exc})", RuntimeWarning, stacklevel=2)
        return None
    fn = lib.attnscope_softmax_row_stats
    ptr, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn.argtypes = [ptr, i64, i64, i64, i64, f32, ptr, ptr, i64, ptr, ptr, ptr]
    fn.restype = None
    return fn


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per process: a forked child does not inherit the parent's worker threads."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attnscope-rows")


def _expect(t: torch.Tensor | None, dtype: torch.dtype, name: str, shape: tuple[int, ...] | None = None) -> None:
    if t is None or t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu" or \
            (shape is not None and tuple(t.shape) != shape):
        got = None if t is None else f"{t.dtype} {tuple(t.shape)} contiguous={t.is_contiguous()} on {t.device}"
        raise ValueError(f"attnscope kernel: {name} must be a contiguous CPU {dtype} tensor"
                         f"{'' if shape is None else f' of shape {shape}'}, got {got}")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def native_softmax_row_stats(fn, scores: torch.Tensor, scale: float, mask: torch.Tensor | None,
                             pair_offsets: torch.Tensor | None, mask_row_stride: int,
                             key_end: torch.Tensor | None, rel_pos: torch.Tensor,
                             stats: torch.Tensor, threads: int | None = None) -> None:
    """Run the C kernel on scores (G, bq, Nk) float32 contiguous (raw q·k in, probabilities out).

    mask: uint8 tensor (1 = may attend) whose data pointer is pair 0 / query 0 / key 0 of the block,
    keys contiguous; pair_offsets: (G,) int64 element offsets of each pair's first row from there;
    mask_row_stride: elements between query rows (0 when every row shares one key mask).
    key_end: (bq,) int64, query i attends to keys < key_end[i] (causal), or None.
    rel_pos: (bq,) float32, query position minus the position of key column 0.
    stats: (G * bq, 8) float32 output, columns ``KERNEL_STATS``.
    """
    g, bq, nk = scores.shape
    rows = g * bq
    # the C code trusts these; a wrong one would read or write outside the tensors
    _expect(scores, torch.float32, "scores")
    _expect(stats, torch.float32, "stats", (rows, len(KERNEL_STATS)))
    _expect(rel_pos, torch.float32, "rel_pos", (bq,))
    if key_end is not None:
        _expect(key_end, torch.int64, "key_end", (bq,))
    if mask is not None:
        _expect(pair_offsets, torch.int64, "pair_offsets", (g,))
        if mask.dtype != torch.uint8:
            raise ValueError(f"attnscope kernel: mask must be uint8, got {mask.dtype}")
    args = (scale, _ptr(mask), _ptr(pair_offsets), mask_row_stride, _ptr(key_end), _ptr(rel_pos), _ptr(stats))
    threads = max(1, min(threads or torch.get_num_threads(), rows))
    if threads == 1:
        fn(scores.data_ptr(), 0, rows, bq, nk, *args)
        return
    bounds = [rows * t // threads for t in range(threads + 1)]
    pool = _pool(threads, os.getpid())
    futures = [pool.submit(fn, scores.data_ptr(), bounds[t], bounds[t + 1], bq, nk, *args)
               for t in range(threads)]
    for f in futures:
        f.result()
