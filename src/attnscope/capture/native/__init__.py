"""The compiled row kernel of statistics mode (``row_stats.c``): build, cache, verify, load, call.

The kernel turns a block of raw scores into probabilities in place and returns every row's
statistics in four passes over the row while it is in cache (see the C file). It is built on first
use with the system C compiler and loaded with ctypes. A ctypes call releases the GIL, so row ranges
run in parallel on a pool of ``torch.get_num_threads()`` Python threads, read at each call.

The build cache, ``$ATTNSCOPE_CACHE/kernels/``:

- a build is named by the hash of the source, the flags, the compiler's ``--version`` and the CPU
  (architecture, vendor, model and feature flags from ``/proc/cpuinfo``): a cache shared between
  machines (a shared home on a cluster) holds one build per CPU, and a build made for another CPU's
  instructions is never loaded;
- the build's sha256 is written next to it (``<name>.so.sha256``, both files written atomically) and
  checked before loading; a file that fails the check (tampered, corrupt, planted without a matching
  record) is never loaded: it is rebuilt;
- the directory is created 0700; one owned by another user or writable by group or others is refused;
- temporary files of a failed build are removed, those of a killed build once they are older than
  ``STALE_TEMP_SECONDS``.

Whenever the kernel cannot be used (``ATTNSCOPE_NATIVE=0``, no compiler, a compiler that fails, an
unusable cache directory, a file that will not load) :func:`kernel` warns (except for
``ATTNSCOPE_NATIVE=0``) and returns None, and statistics mode takes the general path (SDPA for the
output, statistics recomputed from the scores with torch operations): the same numbers, at several
times the cost (``benchmarks/bench_fused.py``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import time
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
STALE_TEMP_SECONDS = 600  # a build takes about a second; older temporary files belong to a killed one
_CPUINFO_KEYS = ("vendor_id", "cpu family", "model", "model name", "flags",  # x86
                 "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")  # arm


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


@functools.cache
def cpu_id() -> str:
    """What a ``-march=native`` build depends on: the architecture and the first CPU's vendor, model and
    feature flags (``/proc/cpuinfo``; ``platform.processor()`` where there is none)."""
    parts = [platform.machine()]
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            key = key.strip()
            if sep and key in _CPUINFO_KEYS and key not in fields:
                fields[key] = " ".join(value.split())
        parts += [f"{k}={fields[k]}" for k in _CPUINFO_KEYS if k in fields]
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def arch_flag_choices(cpu: str) -> tuple[list[str], ...]:
    """The target flags to try, in order (the first that compiles is used), for a CPU described as
    :func:`cpu_id` describes it. ``-march=native``; on a CPU with AVX-512 also
    ``-mprefer-vector-width=512``: GCC's tuning for Intel's AVX-512 cores keeps auto-vectorised loops at
    256 bits unless told otherwise (GCC 12 emits no zmm register for this kernel with
    ``-march=icelake-server`` alone, 120 with the flag), while torch's SDPA uses 512-bit vectors there.
    The flag only changes the preferred width among instructions ``-march=native`` already allows, so
    it is safe wherever ``avx512f`` is in the CPU's flags; elsewhere it is not added."""
    flags = next((line.partition("=")[2].split() for line in cpu.splitlines()
                  if line.startswith(("flags=", "Features="))), [])
    native = ["-march=native"]
    wide = [native + ["-mprefer-vector-width=512"]] if "avx512f" in flags else []
    return (*wide, native, [])


def _check_private_dir(path: Path) -> None:
    """Create ``path`` 0700 if missing; refuse one that another user owns or that group/others can write."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"kernel cache {path} is not a directory")
    if os.name != "posix":  # ownership and mode bits below are POSIX's
        return
    if st.st_uid != os.geteuid():
        raise RuntimeError(f"kernel cache {path} belongs to another user (uid {st.st_uid}): not used; "
                           f"set ATTNSCOPE_CACHE to a directory of your own")
    if st.st_mode & 0o022:
        raise RuntimeError(f"kernel cache {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): "
                           f"not used; run chmod 700 {path}")


def _remove_stale_temps(directory: Path, older_than: float = STALE_TEMP_SECONDS) -> None:
    """Delete temporary files of builds that were killed (``*.tmp`` older than ``older_than`` seconds)."""
    now = time.time()
    for p in directory.glob("*.tmp"):
        try:
            if now - p.lstat().st_mtime > older_than:
                p.unlink()
        except OSError:
            pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _recorded_sha(target: Path) -> str | None:
    try:
        return _sidecar(target).read_text().strip() or None
    except OSError:
        return None


def _verified(target: Path) -> bool:
    """Whether ``target`` exists and its sha256 is the one recorded when it was built."""
    try:
        data = target.read_bytes()
    except OSError:
        return False
    return _recorded_sha(target) == _sha256(data)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a concurrent reader sees the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def target_name(cc: str, flags: list[str]) -> str:
    """The cache file name of a build: a hash of source, flags, compiler and CPU."""
    key = SOURCE.read_bytes() + "\0".join(flags).encode() + _compiler_id(cc).encode() + cpu_id().encode()
    return f"row_stats-{_sha256(key)[:16]}.so"


# This CPU's choices (the build name hashes the flags and the CPU, so another CPU never loads them).
ARCH_FLAGS = arch_flag_choices(cpu_id())


def build(cc: str, out_dir: Path, arch_flags: tuple[list[str], ...] = ARCH_FLAGS) -> Path:
    """Compile the kernel with ``cc`` into ``out_dir``, or reuse a build there whose sha256 matches the
    one recorded when it was built; returns its path. Raises RuntimeError (compiler errors, an unsafe
    directory) or OSError (a directory it cannot write)."""
    _check_private_dir(out_dir)
    _remove_stale_temps(out_dir)
    errors = []
    for arch in arch_flags:
        flags = _FLAGS + arch
        target = out_dir / target_name(cc, flags)
        if _verified(target):
            return target
        if target.exists():
            warnings.warn(f"attnscope: {target} does not match the sha256 recorded when it was built; "
                          f"not loaded, rebuilt", RuntimeWarning, stacklevel=3)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                                  timeout=120)
            if proc.returncode == 0:
                data = Path(tmp).read_bytes()
                # the record first: a concurrent process that finds the build finds its record too
                _write_atomic(_sidecar(target), (_sha256(data) + "\n").encode())
                os.replace(tmp, target)  # atomic: a concurrent process sees no file or the whole file
                return target
            errors.append(f"{cc} {' '.join(flags)}: {proc.stderr.strip()[-500:]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("could not compile the statistics kernel:\n" + "\n".join(errors))


def load(path: Path):
    """The kernel's C function from a build, after checking its sha256 against the one recorded when it
    was built (the directory is the user's own, so nobody else can swap the file in between)."""
    if not _verified(path):
        raise RuntimeError(f"{path} does not match the sha256 recorded when it was built; not loaded")
    lib = ctypes.CDLL(str(path))
    fn = lib.attnscope_softmax_row_stats
    ptr, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn.argtypes = [ptr, i64, i64, i64, i64, f32, ptr, ptr, i64, ptr, ptr, ptr]
    fn.restype = None
    return fn


@functools.cache
def kernel():
    """The loaded C function, or None (``ATTNSCOPE_NATIVE=0``, no compiler, a failed build, an unusable
    cache directory, a file that does not load)."""
    if os.environ.get("ATTNSCOPE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cc = _compiler()
    if cc is None:
        warnings.warn("attnscope: no C compiler found (set CC or install gcc): statistics mode takes the slower "
                      "general path", RuntimeWarning, stacklevel=2)
        return None
    try:
        return load(build(cc, _cache_dir()))
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
        warnings.warn(f"attnscope: statistics kernel unavailable, statistics mode takes the slower general path "
                      f"({exc})", RuntimeWarning, stacklevel=2)
        return None


_pool_lock = threading.Lock()
_pool_state: dict = {"key": None, "pool": None, "single": False}


def _reset_pool_in_child() -> None:
    global _pool_lock
    _pool_lock = threading.Lock()  # another thread may have held it at the fork
    _pool_state.update(key=None, pool=None, single=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_in_child)


@functools.cache
def _per_thread_torch_threads() -> bool:
    """Whether torch's intra-op thread count is per thread (the OpenMP backend: ``set_num_threads`` sets
    the calling thread's OpenMP and MKL counts). With torch's native backend it is one process-wide pool
    that cannot be resized once used, so pool threads cannot be made single-threaded."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _single_threaded() -> None:
    """Pool thread initializer: this thread's torch operations run on this thread only."""
    torch.get_num_threads()  # torch initialises a thread's count lazily from the global one: do it first
    torch.set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's worker pool, of ``workers`` threads: replaced when the thread count changes (it
    follows ``torch.set_num_threads``) and in a forked child (which does not inherit the parent's threads).

    Where torch's thread count is per thread (:func:`_per_thread_torch_threads`), each pool thread's torch
    operations run single-threaded (``_pool_state["single"]``), so that :func:`run_on_pool` can give each
    thread whole blocks (matrix products and kernel) with no OpenMP team of torch's competing for the
    cores: the caller's own count is restored once the threads are set up."""
    key = (workers, os.getpid())
    with _pool_lock:
        if _pool_state["key"] != key:  # the old pool's idle threads end once nothing refers to it
            single, caller = _per_thread_torch_threads(), torch.get_num_threads()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attnscope-rows",
                                      initializer=_single_threaded if single else None)
            if single:  # start every thread now, then give the process-wide default back to the caller
                barrier = threading.Barrier(workers + 1)
                started = [pool.submit(barrier.wait) for _ in range(workers)]
                barrier.wait()
                for f in started:
                    f.result()
                torch.set_num_threads(caller)
                single = all(pool.submit(torch.get_num_threads).result() == 1 for _ in range(workers))
            _pool_state.update(key=key, pool=pool, single=single)
        return _pool_state["pool"]


def run_on_pool(work, tasks: int) -> bool:
    """Run ``work()`` ``tasks`` times at once (at most ``torch.get_num_threads()``) on the pool's threads,
    each single-threaded in torch, and wait for all; False (nothing run) where pool threads cannot be
    single-threaded (:func:`_pool`). ``work`` takes its share itself (e.g. the next block from a shared
    counter) and returns when none is left."""
    workers = max(1, torch.get_num_threads())
    pool = _pool(workers)
    if not _pool_state["single"]:
        return False
    futures = [pool.submit(work) for _ in range(min(tasks, workers))]
    for f in futures:
        f.result()
    return True


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
    threads: row ranges run in parallel (default ``torch.get_num_threads()`` at this call).
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
    workers = max(1, threads or torch.get_num_threads())
    parts = min(workers, rows)
    if parts == 1:
        fn(scores.data_ptr(), 0, rows, bq, nk, *args)
        return
    bounds = [rows * t // parts for t in range(parts + 1)]
    pool = _pool(workers)
    futures = [pool.submit(fn, scores.data_ptr(), bounds[t], bounds[t + 1], bq, nk, *args) for t in range(parts)]
    for f in futures:
        f.result()
