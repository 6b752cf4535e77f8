"""Quantized model files: weight matrices stored as int8 (with a scale per row) or bf16.

`charrnn export --quantize MODE` stores every weight matrix of the model (the embedding, each
recurrent layer's input and hidden weights, the output head) in MODE, as plain tensors, so the
file still loads with `torch.load(..., weights_only=True)`:

- int8: each row r holds round(w / s_r), clamped to [-127, 127], with s_r = max |w_r| / 127
  kept in fp32 beside it (an error of at most s_r / 2 per weight); a quarter of fp32's bytes.
- bf16: each weight rounded to bfloat16 (8 bits of mantissa); half of fp32's bytes.

Biases and other vectors stay fp32: they are a small part of the file. The checkpoint records
what was done under `quantization`: {"mode": "int8", "scales": {name: fp32 tensor (rows,)}} or
{"mode": "bf16"}. `load_checkpoint` turns the weights back into fp32 (`dequantize_state`), so
every command loads a quantized file like any other and computes in fp32; the loaded state
keeps {"mode": MODE} to say what the file holds.
"""

from __future__ import annotations

import torch

from charrnn.errors import CheckpointError, ConfigError

MODES = ("int8", "bf16")
_INT8_MAX = 127


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"--quantize {mode!r} is not a quantization charrnn knows: use "
                          f"{' or '.join(MODES)}")
    return mode


def _is_matrix(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def _row_shape(t: torch.Tensor) -> tuple[int, ...]:
    return (t.shape[0],) + (1,) * (t.dim() - 1)


def quantize_weights(weights: dict, mode: str) -> tuple[dict, dict]:
    """`weights` (a model's state dict) with every matrix in `mode`, and the record to store."""
    check_mode(mode)
    stored, scales = {}, {}
    for name, t in weights.items():
        t = t.detach()
        if not _is_matrix(t):
            stored[name] = t.clone()
        elif mode == "bf16":
            stored[name] = t.to(torch.bfloat16)
        else:
            w = t.float()
            scale = w.abs().reshape(w.shape[0], -1).amax(1) / _INT8_MAX
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row
            stored[name] = torch.round(w / scale.view(_row_shape(w))).clamp_(
                -_INT8_MAX, _INT8_MAX).to(torch.int8)
            scales[name] = scale
    return stored, ({"mode": mode, "scales": scales} if mode == "int8" else {"mode": mode})


def dequantize_state(state: dict, path) -> None:
    """Turn the weights of a quantized checkpoint `state` back into fp32, in place."""
    record = state.get("quantization")
    if record is None:
        return
    mode = record.get("mode") if isinstance(record, dict) else None
    if mode not in MODES:
        raise CheckpointError(f"{path}: its weights are quantized as {mode!r}, which this "
                              f"charrnn cannot read (it reads {', '.join(MODES)})")
    scales, weights = record.get("scales") or {}, state["model"]
    if not isinstance(scales, dict) or not isinstance(weights, dict):
        raise CheckpointError(f"{path}: its quantized weights are not readable (a corrupt file)")
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: its weights {name} are not a tensor (a corrupt file)")
        if t.dtype == torch.int8:
            scale = scales.get(name)
            if not isinstance(scale, torch.Tensor) or scale.shape != t.shape[:1]:
                raise CheckpointError(f"{path}: the int8 weights {name} have no scale per row "
                                      f"(a corrupt quantized file)")
            weights[name] = t.float() * scale.float().view(_row_shape(t))
        elif t.is_floating_point() and t.dtype != torch.float32:
            weights[name] = t.float()
    state["quantization"] = {"mode": mode}
