"""Sharded distillation: PyTorch's FSDP (``torch.distributed.fsdp.fully_shard``) for the student and
the frozen teacher (``distill.parallel: fsdp``, launched with torchrun as DDP is).

Each repeated block of a generator (the native ``blocks``, MusicGen's decoder ``layers``) is one FSDP
unit, and the model is the root unit holding the rest (embeddings, heads, the dial): every rank keeps
1/N of the parameters, gradients and AdamW state, and gathers one unit's parameters at a time for a
forward or backward. On GPUs with ``distill.bf16`` the parameters are gathered and computed in bf16
and the gradients reduced in fp32 (:func:`mixed_precision`); on the CPU everything stays fp32.

Sampling does not run through ``forward`` (a KV cache is fed one step at a time), so rollouts run
inside :func:`gathered`, which unshards every unit for the call and reshards after: sampling sees
whole weights, and the memory plan (:mod:`musicdistill.training.memory_plan`) counts them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

#: where a generator keeps its repeated blocks (native generator; transformers' MusicGen decoder)
BLOCK_LISTS = ("blocks", "decoder.model.decoder.layers")
#: a generator's methods besides forward that run its blocks (incremental decoding)
SAMPLING_METHODS = ("init_cache", "forward_step")
#: the ways the frozen CFG teacher may be held under FSDP
TEACHER_PLACEMENTS = ("auto", "shard", "replicate")


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``model`` (one FSDP unit each); raises naming the model otherwise."""
    for path in BLOCK_LISTS:
        try:
            blocks = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return list(blocks)
    raise ValueError(
        f"{type(model).__name__} has none of the block lists FSDP shards by ({', '.join(BLOCK_LISTS)}); "
        "use distill.parallel=ddp for it"
    )


def mixed_precision(device: torch.device, bf16: bool):
    """FSDP's precision policy: bf16 parameters and compute with fp32 gradient reduction on GPUs
    with ``bf16``; None (fp32 throughout) otherwise, the CPU included."""
    if device.type != "cuda" or not bf16:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(
    model: nn.Module,
    device: torch.device,
    bf16: bool,
    checkpoint_activations: bool = False,
) -> nn.Module:
    """``model`` sharded in place over the default process group: each block a unit (with activation
    checkpointing when asked: its activations recomputed in the backward), then the root. A model
    that is sharded already is returned as it is."""
    if is_sharded(model):
        return model
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    policy = mixed_precision(device, bf16)
    kwargs = {"mp_policy": policy} if policy is not None else {}
    for block in blocks_of(model):
        if checkpoint_activations:
            from torch.distributed._composable import checkpoint

            checkpoint(block)
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    for method in SAMPLING_METHODS:  # they run the blocks like forward does: the root's hooks first
        if hasattr(model, method):
            register_fsdp_forward_method(model, method)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is an FSDP root (:func:`shard`)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(*models: nn.Module) -> Iterator[None]:
    """Every FSDP unit of ``models`` unsharded for the block (whole weights on every rank, e.g. for
    sampling with a KV cache), resharded after; models that are not sharded pass through."""
    units = [u for m in models for u in _units(m)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s whole weights on the CPU: gathered on rank 0 when sharded (every rank must call
    it; the others get an empty dict), its own state dict otherwise."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def local_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters this rank holds (its shards when sharded)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total
