"""Device and dtype policy: where a model runs and in which precision.

One place resolves what the user asked for (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``, a
``torch.device``; ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype) into a torch device and
dtype, with one-line errors; one place moves a model's inputs to its device; one place turns running
out of accelerator memory into an error that says what to do. Attention probabilities and statistics
are always computed in float32 from the model's q/k (``attnscope.capture.interface``), and traces are
always stored on the CPU (``attnscope.capture.recorders``), whatever the model's device and dtype.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch

from .errors import CaptureError, InputError

DEVICES = ("cpu", "cuda", "cuda:N", "auto")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
_DEVICE = re.compile(r"(cpu|cuda)(?::(\d{1,3}))?")


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """The torch device for ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (cuda when
    ``torch.cuda.is_available()``, else cpu) or a ``torch.device``; None means cpu.

    Raises :class:`InputError` for a malformed name, for CUDA when torch sees no CUDA device, and for a
    CUDA index beyond the devices torch sees."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        kind, index = device.type, device.index
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return resolve_device("cuda" if torch.cuda.is_available() else "cpu")
        m = _DEVICE.fullmatch(name)
        if m is None:
            raise InputError(f"--device {device[:40]!r} is not a device; use one of cpu, cuda, cuda:N (N = 0, 1, "
                             "...) or auto")
        kind, index = m.group(1), (int(m.group(2)) if m.group(2) is not None else None)
        if kind == "cpu" and index is not None:
            raise InputError(f"--device {device!r}: the CPU takes no index; use cpu")
    else:
        raise InputError(f"device must be a string (cpu, cuda, cuda:N, auto) or a torch.device, got "
                         f"{type(device).__name__}")
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise InputError(f"device {str(device)!r}: attnscope runs on cpu or cuda devices; use cpu, cuda, cuda:N or "
                         "auto")
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available to torch (torch.cuda.is_available() is "
                         "False); use --device cpu")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise InputError(f"--device {device}: torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); "
                         "pick one of those")
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def resolve_dtype(dtype: str | torch.dtype | None = "float32") -> torch.dtype:
    """The torch dtype for ``dtype``: ``"float32"``, ``"bfloat16"``, ``"float16"`` (also ``fp32``,
    ``bf16``, ``fp16``) or one of those torch dtypes; None means float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        if name in DTYPES:
            return DTYPES[name]
        raise InputError(f"--dtype {dtype[:40]!r} is not a model precision; use float32, bfloat16 or float16")
    raise InputError(f"dtype must be a string (float32, bfloat16, float16) or a torch dtype, got "
                     f"{type(dtype).__name__}")


_default: dict[str, Any] = {"device": "cpu", "dtype": "float32"}


def set_default_placement(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
                          ) -> tuple[torch.device, torch.dtype]:
    """Set the device and dtype :func:`attnscope.load_model` uses when it is not given them (the CLI's
    ``--device`` / ``--dtype``: one process-wide policy, as ``--threads``). None keeps the current value.
    Both are checked now (a one-line :class:`InputError`); returns them resolved."""
    resolved = (resolve_device(device if device is not None else _default["device"]),
                resolve_dtype(dtype if dtype is not None else _default["dtype"]))
    if device is not None:
        _default["device"] = device
    if dtype is not None:
        _default["dtype"] = dtype
    return resolved


def default_placement() -> tuple[str | torch.device, str | torch.dtype]:
    """(device, dtype) that :func:`attnscope.load_model` uses when not given them: cpu and float32 unless
    :func:`set_default_placement` changed them."""
    return _default["device"], _default["dtype"]


def model_device(model: Any) -> torch.device:
    """The device of a model's parameters (a LoadedModel or a torch module; cpu when it has none)."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


def model_inputs(inputs: dict[str, Any], model: Any) -> dict[str, Any]:
    """The inputs with every tensor on the model's device, and floating-point ones (audio features) in
    the model's dtype; token ids and masks keep theirs; other values are returned as they are."""
    device = model_device(model)
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)
    dtype = getattr(module, "dtype", None)

    def move(v):
        if not isinstance(v, torch.Tensor):
            return v
        if v.is_floating_point() and isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return v.to(device, dtype)
        return v.to(device)

    return {k: move(v) for k, v in inputs.items()}


def to_cpu(obj: Any) -> Any:
    """A recorder's reduction (a tensor, or a dict / tuple / list of them) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)
"""What torch raises when an accelerator runs out of memory (``torch.cuda.OutOfMemoryError`` is this class)."""


def out_of_memory(exc: BaseException, where: str, block_elements: int | None = None) -> CaptureError:
    """The one-line error for running out of accelerator memory during ``where`` (e.g. 'self layer 12'):
    what was running, the block size, and what to change. Frees torch's cached blocks first."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    block = (f" with blocks of {block_elements:,} scores ({block_elements * 4 / 2**20:.0f} MiB in float32)"
             if block_elements else "")
    return CaptureError(f"out of GPU memory while capturing {where}{block}; nothing was written. Pass a smaller "
                        "--block-elements (block_elements=), capture fewer layers or heads (--layers, --heads), "
                        "use stats mode, a shorter input, or --device cpu")


@contextlib.contextmanager
def capture_memory_errors(session: Any = None, block_elements: int | None = None) -> Iterator[None]:
    """Turn running out of accelerator memory inside the block into :func:`out_of_memory`'s error, naming
    the site the capture ``session`` was at (its ``site``: stream and layer) and the block size."""
    try:
        yield
    except OUT_OF_MEMORY as e:
        site = getattr(session, "site", None)
        where = f"{site.stream} layer {site.layer}" if site is not None else "the forward pass"
        raise out_of_memory(e, where, block_elements) from None
