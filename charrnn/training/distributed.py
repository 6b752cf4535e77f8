"""torchrun set-up: rank, world size, the process group, and the decisions every rank shares.

`torchrun --nproc_per_node=N -m charrnn train CONFIG` starts N copies of the command with RANK,
LOCAL_RANK and WORLD_SIZE in their environment; torchrun is the launcher, and it tears the whole
job down when one process dies. Each rank trains the same model (DistributedDataParallel, NCCL
on CUDA with device cuda:LOCAL_RANK, gloo on the CPU) on its own rows of the global batch.
Decisions that must not differ between ranks (stop, skip, the clock behind `max_minutes` and the
time-based learning rate, the validation loss) are made once here and shared. Nothing else in
charrnn knows about ranks beyond asking this module; without torchrun, `Group` is one process
and every method is a plain pass-through.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from charrnn.checkpoint import restore_rng
from charrnn.device import available_cores, resolve_device, seed_everything
from charrnn.errors import ConfigError, DeviceError, TrainingFailed
from charrnn.models.family import map_hidden

# How long a rank waits in a collective before giving up. A dead rank is noticed by torchrun
# at once; this only ends a job whose ranks are alive but stuck. Rank 0 validates while the
# others wait, so it must exceed the longest evaluation (see train.eval_batches).
TIMEOUT = timedelta(minutes=20)

# Steps between the ranks' agreements on stopping and on the clock (README "Several GPUs or
# machines"): a stop asked for, or a time budget spent, takes effect at the next multiple of
# it, and a time-based learning rate moves on at those steps. Each agreement is an exchange
# between the processes; one per step costs time on a fast GPU.
AGREE_EVERY = 10


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its env)."""
    return all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def env_rank() -> int:
    """This process's rank, known before any process group exists (0 without torchrun)."""
    return int(os.environ["RANK"]) if launched() else 0


def is_main_process() -> bool:
    """Rank 0, the one that writes and reports; always True without torchrun."""
    return env_rank() == 0


def run_device(spec: str) -> torch.device:
    """The device this process trains on for `train.device` = `spec`: under torchrun the one of
    its local rank, else the one `spec` names (`auto` on a GPU machine: CUDA's current device;
    `cuda`: cuda:0)."""
    if launched():
        return _pick_device(spec, int(os.environ["LOCAL_RANK"]))
    return resolve_device(spec)


def _pick_device(spec: str, local_rank: int) -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == f"cuda:{local_rank}":
        spec = "cuda"
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"local rank {local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()} (give torchrun --nproc_per_node "
                              f"at most that)")
        return torch.device("cuda", local_rank)
    if spec.startswith("cuda"):
        if spec != "cuda":
            raise DeviceError(f"device {spec!r}: under torchrun each process uses "
                              f"cuda:LOCAL_RANK (here cuda:{local_rank}); set the device to "
                              f"cuda or auto")
        resolve_device(spec)  # raises: no CUDA here
    if spec == "auto" or spec == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device {spec!r}: under torchrun, training runs on CUDA (NCCL) or on the "
                      f"CPU (gloo)")


@dataclass
class Group:
    """The ranks of one training job; a world of one without torchrun."""

    device: torch.device
    rank: int = 0
    world: int = 1
    launched: bool = False
    flags_group: object = None  # the group `agree` uses (None: the default one)
    agreed_clock: float | None = None  # the clock the ranks last agreed on

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's streams (rows) of the global batch: rank r takes the r-th equal slice."""
        share = batch_size // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def cpu_threads(self, requested: int | None) -> int | None:
        """CPU threads for this process: as asked, else under torchrun the cores this process
        may use shared among the LOCAL_WORLD_SIZE processes on this machine (each taking them
        all would oversubscribe them, many times slower)."""
        if requested or not self.launched:
            return requested
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        return max(1, available_cores() // local)

    def share_object(self, obj):
        """Rank 0's `obj` on every rank (a planned config: one plan, however many ranks)."""
        if not self.launched:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.flags_group)
        return box[0]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: DistributedDataParallel under torchrun (it averages gradients)."""
        if not self.launched:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def agree(self, stop: bool, clock: float, step: int = 0) -> tuple[bool, float]:
        """Whether any rank asked to stop, and the ranks' mean clock (seconds), at the top of
        step `step`: so every rank stops at the same step and follows one time-based schedule.
        The ranks agree at a session's first step and every AGREE_EVERY steps; in between, no
        stop, and the clock last agreed on.

        Over gloo on the CPU even when gradients go over NCCL, so it costs no GPU sync.
        """
        if not self.launched:
            return stop, clock
        if self.agreed_clock is not None and step % AGREE_EVERY:
            return False, self.agreed_clock
        flags = torch.tensor([float(stop), clock], dtype=torch.float64)
        dist.all_reduce(flags, group=self.flags_group)
        self.agreed_clock = flags[1].item() / self.world
        return flags[0].item() > 0, self.agreed_clock

    def average(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged over ranks, left on the device (nothing is read to the host): a
        non-finite loss on any rank is non-finite on every rank, so all skip or stop alike."""
        if self.launched:
            values = values.detach().clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def share(self, value: float) -> float:
        """Rank 0's `value` (e.g. a validation loss) on every rank; doubles as a barrier."""
        if not self.launched:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return t.item()

    def gather_hidden(self, hidden):
        """Every stream's carried state, in global order, as fp32 on the CPU (for checkpoints)."""
        def gather(h: torch.Tensor) -> torch.Tensor:
            h = h.detach().float().contiguous()
            if self.launched:
                pieces = [torch.empty_like(h) for _ in range(self.world)]
                dist.all_gather(pieces, h)
                h = torch.cat(pieces, dim=1)  # (layers, streams, hidden)
            return h.cpu()

        return map_hidden(gather, hidden)

    def split_hidden(self, hidden, batch_size: int):
        """This rank's rows of a whole saved hidden state (whatever world size saved it)."""
        rows = self.rows(batch_size)
        return map_hidden(lambda h: h[:, rows], hidden)

    def seed_rank(self, seed: int, step: int) -> None:
        """A random stream of its own (dropout) for a rank other than 0 from `step` on; rank 0
        keeps the stream a plain run has."""
        if not self.main:
            seed_everything((seed * 1_000_003 + self.rank * 7_919 + step) % (1 << 63), self.device)

    def restore_rng(self, state: dict, seed: int, step: int, batch_size: int) -> list[str]:
        """Restore this rank's saved RNG state, or derive one; say what a new world size changed."""
        saved = state.get("rank_rng") or [state.get("rng", {})]
        if self.rank < len(saved):
            restore_rng(saved[self.rank], self.device)
        else:
            self.seed_rank(seed, step)
        before = state.get("world_size", 1)
        if before == self.world:
            return []
        derived = (f"; RNG states of ranks {before}-{self.world - 1} derived from the seed"
                   if self.world > before else "")
        return [f"world size: {before} -> {self.world} (the hidden state of the {batch_size} "
                f"streams re-split {self.world} way(s){derived})"]

    def gather_objects(self, obj) -> list:
        """`obj` of every rank, in rank order (small picklable values such as RNG states)."""
        if not self.launched:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sync(self) -> None:
        """Wait until every rank is here: a rank that tears its group down while another is
        still in a collective can abort the other's exit (gloo: "terminate called")."""
        if self.launched:
            dist.barrier()

    def close(self) -> None:
        if self.launched and dist.is_initialized():
            dist.destroy_process_group()

    @contextmanager
    def failures(self):
        """Turn a collective that failed into one error that keeps its cause: lost contact
        when another rank went away (died, was stopped, or a connection broke)."""
        try:
            yield
        except (dist.DistError, RuntimeError) as exc:
            text = str(exc)
            if not self.launched or not isinstance(exc, dist.DistError) and not any(
                    k in text for k in ("gloo", "NCCL", "Connection", "connection")):
                raise
            lost = isinstance(exc, dist.DistNetworkError) or any(
                k in text.lower() for k in _PEER_LOST)
            what = ("lost contact with the other ranks (one failed or was stopped)" if lost
                    else "communication between the ranks failed")
            raise TrainingFailed(f"rank {self.rank}: {what}: {_one_line(text)}") from None


# What a collective says when another rank has gone away (gloo, NCCL, the TCP store).
_PEER_LOST = ("connection closed", "connection reset", "connection refused", "closed by peer",
              "remote peer", "broken pipe", "timed out", "timeout", "aborted",
              "remote process exited", "network error")


def _one_line(text: str, limit: int = 600) -> str:
    """An error from torch.distributed in one line: all its lines, not its C++ stack."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("Exception raised from"):  # the stack frames follow
            break
        lines.append(line)
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def start(device_spec: str, batch_size: int) -> Group:
    """Join the job torchrun started (or make a world of one): device and process group."""
    if not launched():
        return Group(resolve_device(device_spec))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if batch_size % world:
        raise ConfigError(f"train.batch_size {batch_size} does not divide among {world} "
                          f"processes: it is the global number of streams, and each process "
                          f"takes an equal share (use a multiple of {world})")
    device = run_device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
        flags = dist.new_group(backend="gloo", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
        flags = None
    return Group(device, rank, world, launched=True, flags_group=flags)


@contextmanager
def joined(device_spec: str, batch_size: int):
    """The group of one training job: joined, its lost ranks reported as one error, closed."""
    group = start(device_spec, batch_size)
    try:
        with group.failures():
            yield group
            group.sync()  # a clean end: all ranks finish their collectives before any closes
    finally:
        group.close()
