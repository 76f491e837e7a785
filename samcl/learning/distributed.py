"""Learning on several processes (GPUs, nodes) with torch.distributed, launched by `torchrun`.

    torchrun --nproc-per-node 4 -m samcl learn my-set --domain polyps --data data/kvasir
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint host0:29500 -m samcl learn my-set --domain polyps --data data/kvasir

What is distributed, and how it stays equal to one process (see `samcl.learning.trainer.train_module`):

- Data parallel training of the new AugModule: every rank draws the same seeded epoch order, cuts it into
  global batches of `batch_size x world` samples and takes every world-th one; prompt points are drawn per
  (seed, epoch, sample), so they do not depend on which rank runs a sample. DistributedDataParallel averages
  the gradients, so every rank takes the same Adam step as one process with the global batch would.
- The selector's pooled features each rank computed from its shard (a by-product of the frozen prefix) are gathered,
  so the buffer is the one a single process builds.
- After training, ranks compare a hash of the module (they must be bit-identical); rank 0 alone embeds the
  missing buffer samples, retrains the selector and writes the store, then broadcasts the result, so every
  rank ends with the same module set in memory. The store lock is only taken by rank 0.

Backends: NCCL when the device is CUDA (one GPU per process: cuda:LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import SamclError

#: The variables torchrun (torch.distributed.run) sets in every worker.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group: rank of world; local_rank picks the GPU on its node."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel over the module's parameters (its forward returns them grouped)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [module_device(module).index] if module_device(module).type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        dist.barrier()

    def all_gather(self, value) -> list:
        """Any picklable value from every rank, in rank order (tensors: send them on CPU)."""
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value=None):
        """Rank 0's value on every rank."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_pooled(self, pooled: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Merge the sample index -> pooled features maps of all ranks (each pooled only its own shard).

        Where several ranks pooled the same sample (its shard changes per epoch), the lowest rank's copy is
        kept; the prefix is deterministic, so the copies agree."""
        indices = sorted(pooled)
        part = (indices, torch.stack([pooled[i].detach().float().cpu() for i in indices]) if indices else None)
        merged: dict[int, torch.Tensor] = {}
        for rank_indices, features in self.all_gather(part):
            for j, index in enumerate(rank_indices):
                merged.setdefault(index, features[j])
        return merged

    def mean(self, values: list[float]) -> list[float]:
        """Element-wise mean over ranks."""
        columns = list(zip(*self.all_gather([float(v) for v in values])))
        return [sum(c) / self.world for c in columns]

    def check_agree(self, what: str, value) -> None:
        """Every rank must hold the same `value` (e.g. a module hash); a clear error on every rank otherwise."""
        values = self.all_gather(value)
        if any(v != values[0] for v in values):
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise SamclError(f"ranks {differ} disagree with rank 0 on {what}: "
                             f"{str(values[differ[0]])[:80]} != {str(values[0])[:80]}")


# ---------------------------------------------------------------------- the steps `SAMCL.learn` takes
def check_ready(ctx: DistContext, samcl, name: str, count: int, without_module: bool) -> None:
    """Before any work: each rank on its own device, and all ranks learning the same thing on the same store
    state (a node that sees another store, e.g. not on a shared filesystem, would otherwise diverge)."""
    if samcl.device.type == "cuda" and samcl.device.index not in (None, torch.cuda.current_device()):
        raise SamclError(f"rank {ctx.rank}: the module set is on {samcl.device} but this rank's GPU is "
                         f"cuda:{torch.cuda.current_device()} (create it with "
                         "device=samcl.learning.distributed.init().device)")
    ctx.check_agree("the task (domain, without_module, samples, store generation, domains, device kind)",
                    (name, without_module, count, samcl.module_set.generation, samcl.domains, samcl.device.type))


def merge_training(ctx: DistContext, module: nn.Module, stats: dict, pooled: dict[int, torch.Tensor]
                   ) -> tuple[dict[int, torch.Tensor], dict]:
    """After data-parallel training: ranks must hold the same module (bit for bit: DDP synchronised every
    step); the pooled features of all shards are merged; the logged losses (each rank's share of the global
    batch loss) are averaged into the global ones."""
    ctx.check_agree("the trained module (sha256)", tensors_sha256(module.state_tensors()))
    stats = dict(stats)
    stats["loss_first"], stats["loss_last"] = ctx.mean([stats["loss_first"], stats["loss_last"]])
    stats["seconds"] = max(ctx.all_gather(stats["seconds"]))
    stats["processes"] = ctx.world
    return ctx.gather_pooled(pooled), stats


def send_result(ctx: DistContext, samcl, report: dict) -> None:
    """Rank 0, after saving: the new domain entries, selector and buffer (on CPU), and the report."""
    state = samcl.module_set
    ctx.broadcast({
        "report": report, "generation": state.generation, "domains": [d.to_dict() for d in state.domains],
        "selector": {k: v.detach().cpu() for k, v in state.selector.to_tensors().items()},
        "dim": state.selector.dim,
        "buffer": None if state.buffer is None else (state.buffer.features.cpu(), state.buffer.labels.cpu()),
    })


def receive_result(ctx: DistContext, samcl) -> dict:
    """Other ranks: take rank 0's selector, buffer and entries, so every rank holds the same module set."""
    from ..selector import FeatureBuffer, selector_from_tensors
    from ..store.moduleset import DomainEntry

    result = ctx.broadcast()
    state = samcl.module_set
    state.generation = result["generation"]
    state.domains = [DomainEntry(**entry) for entry in result["domains"]]
    width = state.selector_config.width(result["dim"])
    buffer = None if result["buffer"] is None else FeatureBuffer(width, *result["buffer"])
    state.selector = selector_from_tensors(state.selector_config, result["dim"], len(state.domains),
                                           result["selector"], buffer).to(samcl.device)
    return result["report"]


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors' exact bytes (to check that ranks hold bit-identical modules)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def launched() -> bool:
    """True in a worker that torchrun started with more than one process."""
    return all(key in os.environ for key in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def resolve_device(requested: str | torch.device | None, local_rank: int) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK when CUDA is requested (or available), else the CPU."""
    if requested is None:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is not None:
            rule = "under torchrun each process uses cuda:LOCAL_RANK"
            raise SamclError(f"device {str(requested)!r}: {rule}; use device 'cuda' (choose GPUs with "
                             "CUDA_VISIBLE_DEVICES)", field="device")
        kind = device.type
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        rule = "distributed learning runs on cuda (NCCL) or cpu (gloo)"
        raise SamclError(f"device {str(requested)!r}: {rule}", code="unsupported", field="device")
    if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
        raise SamclError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible on this node); "
                         "start at most one process per GPU (torchrun's nproc-per-node option)")
    return torch.device("cuda", local_rank)


def init(device: str | torch.device | None = None) -> DistContext | None:
    """Under torchrun with more than one process: join the process group (NCCL on CUDA, gloo on CPU) and
    return this rank's context. Otherwise None (one process: nothing to do). Safe to call twice."""
    if not launched():
        return None
    local_rank = int(os.environ["LOCAL_RANK"])
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, target)


def current() -> DistContext | None:
    """The context of an initialised process group with more than one rank (None otherwise), whoever set it
    up: `init`, torchrun plus the user's own `init_process_group`, or `torch.multiprocessing.spawn`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    return DistContext(rank, dist.get_world_size(), local_rank, device)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
