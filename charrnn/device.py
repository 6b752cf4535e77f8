"""Device choice, CPU threads, precision and seeding, decided in one place."""

from __future__ import annotations

import contextlib
import os
import re

import warnings

import torch

from charrnn.errors import DeviceError


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an explicit device must exist here."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m:
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r}: CUDA is not available on this machine "
                              f"(use --device cpu or --device auto)")
        index = int(m.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s), numbered from 0")
        return torch.device("cuda", index)
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("device 'mps': Apple's MPS is not available on this machine "
                              "(use --device cpu or --device auto)")
        return torch.device("mps")
    raise DeviceError(f"device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")


def machine_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_of(device: torch.device) -> tuple[int | None, str]:
    """Bytes of memory that `device` computes in (None where unknown), and its name in errors:
    a CUDA GPU's own memory, else the machine's."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.total_memory, f"the GPU's ({props.name})"
    return machine_memory(), "this machine's"


def check_memory(need: int, device: torch.device, what: str, remedy: str,
                 error: type[Exception] = DeviceError) -> None:
    """Refuse, before anything is allocated, what needs more than all of `device`'s memory:
    raise `error` saying that `what` needs about `need` bytes, and what to do (`remedy`)."""
    have, where = memory_of(device)
    if have is not None and need > have:
        raise error(f"{what} needs about {_gib(need)} GiB of memory, more than {where} "
                    f"{_gib(have)} GiB: {remedy}")


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f}" if size < 10 * 2**30 else f"{size / 2**30:,.0f}"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Use `threads` CPU threads (default: the cores this process may use); return the count."""
    n = threads or available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# What `train.precision` may be; `auto` resolves per device (see resolve_precision).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
AUTO_PRECISION_CUDA = "fp32"  # TF32 allowed; README "Precision" says why, gpu_checks.sh measures


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses on `device`: fp32, fp16 or bf16.

    `auto` is fp32 everywhere (with TF32 on CUDA). fp16 and bf16 are CUDA features: asked for
    elsewhere, they are an error rather than a silent fp32 run, so that a result is never
    reported under a precision it was not computed in (`auto` keeps a config portable).
    """
    if precision not in PRECISIONS:
        raise DeviceError(f"train.precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return AUTO_PRECISION_CUDA if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return precision
    if device.type != "cuda":
        raise DeviceError(f"train.precision {precision} needs a CUDA GPU, and this run is on "
                          f"{device.type}: set train.precision to fp32, or auto (fp32 here, "
                          f"{AUTO_PRECISION_CUDA} on a GPU)")
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise DeviceError(f"train.precision bf16: {torch.cuda.get_device_name(device)} has no "
                          f"bf16 support (compute capability 8.0 or newer needed): use fp16 or "
                          f"fp32")
    return precision


def configure_precision(precision: str, device: torch.device) -> None:
    """Allow TF32 tensor cores for fp32 matrix products on CUDA (cuDNN allows them by default)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of a resolved precision: fp16 or bf16 on CUDA, nothing otherwise."""
    if device.type == "cuda" and precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (small gradients would underflow without it); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


def fast_step_context(device: torch.device):
    """Context for one-character-at-a-time inference.

    On the CPU, oneDNN's recurrent kernels are several times slower than torch's own for a
    batch of one step (measured in `make bench`), so they are switched off while sampling.
    """
    return onednn(enabled=False) if device.type == "cpu" else contextlib.nullcontext()


@contextlib.contextmanager
def onednn(enabled: bool):
    """oneDNN's CPU kernels on or off inside; torch's note on TF32, which it gives when these
    flags are set, is silenced there and nowhere else."""
    flags = torch.backends.mkldnn.flags(enabled=enabled)
    with _tf32_note_silenced():
        flags.__enter__()
    try:
        yield
    finally:
        with _tf32_note_silenced():
            flags.__exit__(None, None, None)


@contextlib.contextmanager
def _tf32_note_silenced():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        yield


def cuda_index(device: torch.device) -> int:
    """The number of CUDA device `device` (`cuda` alone: the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed the generators a run on `device` draws from: the CPU's and, on a GPU, that GPU's;
    the other devices' are left alone."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.init()
        torch.cuda.default_generators[cuda_index(device)].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)  # MPS: seeded with the CPU's
