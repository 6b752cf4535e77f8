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


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA (no grad scaler needed); plain fp32 elsewhere."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_step_context(device: torch.device):
    """Context for one-character-at-a-time inference.

    On the CPU, oneDNN's recurrent kernels are several times slower than torch's own for a
    batch of one step (measured in `make bench`), so they are switched off while sampling.
    """
    if device.type == "cpu":
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
