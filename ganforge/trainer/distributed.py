"""Process group setup (torchrun's env:// contract) and the few collectives the loop uses.

Gradients are averaged like DistributedDataParallel does, but with one all_reduce of one flat
buffer per optimizer step, in a fixed parameter order. DDP rebuilds its buckets after the first
iteration, so a resumed process would reduce in a different order than the uninterrupted one and
drift by an ulp; a fixed layout keeps resume bitwise-exact for any world size. The same buffer
carries the per-step control flags (preemption, non-finite loss, fatal error), so agreeing to stop
costs no extra collective.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ganforge.trainer.errors import ConfigError, DistributedError, TrainerError, error_for_code

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False  # whether a process group exists (world size > 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return dist.get_backend() if self.initialized else "none"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def pick_device(requested: str, gpus_per_worker: int, local_rank: int | None, rank: int = 0) -> torch.device:
    """The rank's device: GPU LOCAL_RANK of those the pod sees. Without LOCAL_RANK (one rank per
    node, launched by hand) the rank's GPU is its global rank modulo the node's GPUs."""
    if requested == "cpu" or (requested == "auto" and (gpus_per_worker == 0 or not torch.cuda.is_available())):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: CUDA is not available on this node")
    count = torch.cuda.device_count()
    if local_rank is not None and local_rank >= count:
        # Two ranks on one GPU would train, slower and short of memory, without saying so.
        raise ConfigError(f"LOCAL_RANK={local_rank} but this node shows {count} GPU(s) to the process "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): "
                          "one rank per GPU needs as many GPUs as ranks per pod")
    index = local_rank if local_rank is not None else rank % count
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(device_request: str, gpus_per_worker: int, timeout_seconds: float) -> DistContext:
    """One process per rank, configured by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT). Without them, or with WORLD_SIZE=1, no process group is created:
    collectives become no-ops, so a plain `ganforge train` needs no rendezvous."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    # Without LOCAL_RANK (a launch by hand, one rank per node) the global rank stands in.
    given = bool(os.environ.get("LOCAL_RANK"))
    local_rank = _env_int("LOCAL_RANK", rank)
    if local_rank < 0:
        raise ConfigError(f"LOCAL_RANK={local_rank} is negative")
    device = pick_device(device_request, gpus_per_worker, local_rank if given else None, rank)
    if world_size == 1:
        return DistContext(0, 1, 0, device, False)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"WORLD_SIZE={world_size} but {name} is not set (env:// rendezvous)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_seconds),
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as error:
        address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DistributedError(f"rendezvous at {address} failed: {error}") from None
    return DistContext(rank, world_size, local_rank, device, True)


def shutdown(ctx: DistContext) -> None:
    if ctx.initialized and dist.is_initialized():
        dist.destroy_process_group()


def _collective(description: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (RuntimeError, dist.DistBackendError) as error:
        raise DistributedError(f"{description} failed (a peer rank died or timed out): {error}") from None


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.initialized:
        _collective("all_reduce", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return tensor


def agree_on_code(ctx: DistContext, code: int) -> int:
    """Every rank learns the worst outcome of a phase, so nobody waits forever on a failed peer."""
    if not ctx.initialized:
        return code
    value = torch.tensor([code], dtype=torch.int64, device=ctx.device)
    _collective("agreeing on a status", lambda: dist.all_reduce(value, op=dist.ReduceOp.MAX))
    return int(value.item())


def run_phase(ctx: DistContext, description: str, fn: Callable[[], T]) -> T:
    """Run a setup phase on every rank; if it fails anywhere, fail everywhere with that code."""
    failure: TrainerError | None = None
    result: T | None = None
    try:
        result = fn()
    except TrainerError as error:
        failure = error
    except Exception as error:  # an unclassified bug must still release the peers
        log.exception("%s failed", description)
        failure = TrainerError(f"{description}: {type(error).__name__}: {error}")
    agreed = agree_on_code(ctx, int(failure.exit_code) if failure else 0)
    if failure is not None:
        raise failure
    if agreed:
        raise error_for_code(agreed, f"{description} failed on another rank (exit code {agreed})")
    return result  # type: ignore[return-value]


def gather_to_main(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (None elsewhere)."""
    if not ctx.initialized:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    _collective("gather_object", lambda: dist.gather_object(obj, out, dst=0))
    return out


def broadcast_from_main(ctx: DistContext, obj: Any) -> Any:
    if not ctx.initialized:
        return obj
    box = [obj]
    _collective("broadcast_object_list", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def _grad_view(buffer: torch.Tensor, offset: int, param: torch.Tensor) -> torch.Tensor:
    """A slice of `buffer` shaped and strided like `param`. Autograd's gradient layout contract
    wants .grad to share the parameter's strides (channels_last weights get channels_last grads);
    a mismatch would make every accumulation and optimizer step a strided copy."""
    if param.is_contiguous():
        return buffer[offset : offset + param.numel()].view(param.shape)
    if param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last):
        return buffer.as_strided(param.shape, param.stride(), offset)
    raise TypeError(f"parameter of shape {tuple(param.shape)} has an unsupported memory layout {param.stride()}")


class FlatGradients:
    """The gradients of `params` live as views into one flat buffer, followed by `extra` control
    slots. Autograd accumulates into an existing .grad in place, so after backward the buffer already
    holds every gradient: no copy before the collective, and one norm gives the global grad norm."""

    def __init__(self, params: Sequence[torch.nn.Parameter], extra: int, device: torch.device) -> None:
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)
        self.buffer = torch.zeros(self.numel + extra, device=device, dtype=torch.float32)
        self.grads = self.buffer[: self.numel]
        self.extra = self.buffer[self.numel :]
        self._views: list[torch.Tensor] = []
        offset = 0
        for p in self.params:
            if p.dtype != torch.float32:
                raise TypeError(f"parameters must be float32 master weights, got {p.dtype}")
            self._views.append(_grad_view(self.buffer, offset, p))
            offset += p.numel()
        self.zero()

    def zero(self) -> None:
        self.buffer.zero_()
        for p, view in zip(self.params, self._views, strict=True):
            if p.grad is not view:
                p.grad = view

    def collect(self) -> None:
        """Pull back any gradient that autograd stored outside the buffer (it may replace .grad)."""
        storage = self.buffer.untyped_storage().data_ptr()
        for p, view in zip(self.params, self._views, strict=True):
            grad = p.grad
            if grad is None:
                view.zero_()
            elif grad is not view and grad.untyped_storage().data_ptr() != storage:
                view.copy_(grad)
            p.grad = view

    def all_reduce_mean(self, ctx: DistContext) -> None:
        """Average gradients over ranks and SUM the control slots, in a single collective."""
        self.collect()
        if ctx.initialized:
            all_reduce_sum(ctx, self.buffer)
            self.grads.div_(ctx.world_size)
