"""Weight merging of two finetunes of the same base model (docs/method.md section 5).

``θ_λ`` runs from checkpoint A at λ = 0 (the quality model) to checkpoint B at λ = 1 (the diversity
model):

- ``lerp``:  ``θ_λ = (1 - λ)·θ_A + λ·θ_B``, the paper's merge.
- ``slerp``: with task vectors ``δ = θ - θ_init`` taken per tensor (flattened, as mergekit and
  WARP do), ``θ_λ = θ_init + sin((1-λ)Ω)/sin Ω · δ_A + sin(λΩ)/sin Ω · δ_B`` where
  ``cos Ω = <δ_A, δ_B> / (‖δ_A‖ ‖δ_B‖)``.

mergekit semantics are kept: the arithmetic runs in float32 and the result is cast back to the
stored dtype; nearly parallel task vectors (``|cos Ω| > 0.9995``) fall back to LERP. One deliberate
difference: a task vector of norm ≤ eps (a tensor a finetune did not change) also falls back to
LERP, so the other model's change is scaled by λ rather than by mergekit's ``sin(λπ/2)``. The end
points λ = 0 and λ = 1 return copies of A and B bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from musicdistill.model.loading import BACKBONE_PROVENANCE
from musicdistill.progress import track
from musicdistill.storage.checkpoint import (
    MODEL_FILE,
    Checkpoint,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)

MERGE_METHODS = ("lerp", "slerp")
#: config sections that define what the weights mean; they must agree between merged models
ARCHITECTURE_SECTIONS = ("model", "codec", "text")
_MAX_LISTED = 5


class MergeError(ValueError):
    """Two state dicts or checkpoints cannot be merged; the message names the tensors or files."""


# --------------------------------------------------------------------------------------------
# Per-tensor interpolation
# --------------------------------------------------------------------------------------------


def lerp(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1 - lam)·a + lam·b`` in ``a.dtype``; same shape as ``a``.

    ``torch.lerp`` computes half and bfloat16 inputs in float32 and rounds once (its "opmath"; pinned
    by a test), so this equals the float32 result cast back, without float32 copies of the inputs.
    """
    if a.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return torch.lerp(a, b, float(lam))
    return torch.lerp(a.float(), b.float(), float(lam)).to(a.dtype)


def _slerp_coefficients(
    norm_a: float, norm_b: float, dot: float, lam: float, dot_threshold: float, eps: float
) -> tuple[float, float, bool]:
    """``(s0, s1, used_lerp)`` with ``slerp(δ_A, δ_B; λ) = s0·δ_A + s1·δ_B``, from the norms and the dot."""
    if norm_a <= eps or norm_b <= eps:
        return 1.0 - lam, lam, True
    cos = dot / (norm_a * norm_b)
    if abs(cos) > dot_threshold:
        return 1.0 - lam, lam, True
    omega = math.acos(max(-1.0, min(1.0, cos)))
    sin_omega = math.sin(omega)
    return math.sin((1.0 - lam) * omega) / sin_omega, math.sin(lam * omega) / sin_omega, False


def slerp(
    delta_a: torch.Tensor,
    delta_b: torch.Tensor,
    lam: float,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Spherical interpolation of two task vectors (any shape, flattened as one vector).

    Returns ``sin((1-λ)Ω)/sin Ω · δ_A + sin(λΩ)/sin Ω · δ_B`` in ``delta_a.dtype`` (computed in
    float32), or the LERP ``(1-λ)·δ_A + λ·δ_B`` when ``|cos Ω| > dot_threshold`` or either norm is
    ≤ ``eps``. Unlike LERP, SLERP keeps the norm of two orthogonal unit vectors at 1 for every λ.
    """
    if delta_a.shape != delta_b.shape:
        raise ValueError(f"task vectors differ in shape: {tuple(delta_a.shape)} vs {tuple(delta_b.shape)}")
    va, vb = delta_a.float().reshape(-1), delta_b.float().reshape(-1)
    s0, s1, _ = _slerp_coefficients(
        float(torch.linalg.vector_norm(va)),
        float(torch.linalg.vector_norm(vb)),
        float(torch.dot(va, vb)),
        float(lam),
        dot_threshold,
        eps,
    )
    return torch.add(va * s0, vb, alpha=s1).reshape(delta_a.shape).to(delta_a.dtype)


#: elements per chunk of the SLERP merge (1 MiB of float32 per scratch buffer): large enough that the
#: Python loop costs nothing, small enough that the scratch buffers stay in cache
_CHUNK = 1 << 18


def _chunks(numel: int) -> Iterator[slice]:
    for start in range(0, numel, _CHUNK):
        yield slice(start, min(start + _CHUNK, numel))


def _difference_into(x: torch.Tensor, y: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``x - y`` written into ``buf`` (the compute dtype): exact up-cast first, then one subtraction."""
    if x.dtype == buf.dtype and y.dtype == buf.dtype:
        return torch.sub(x, y, out=buf)
    return buf.copy_(x).sub_(y)


def _task_vector_stats(
    fa: torch.Tensor, fb: torch.Tensor, fbase: torch.Tensor, scratch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[float, float, float]:
    """``(‖δ_A‖, ‖δ_B‖, <δ_A, δ_B>)`` of flat tensors, chunk by chunk, accumulated in float64."""
    norm2_a = norm2_b = dot = 0.0
    for part in _chunks(fa.numel()):
        n = part.stop - part.start
        da = _difference_into(fa[part], fbase[part], scratch[0][:n])
        db = _difference_into(fb[part], fbase[part], scratch[1][:n])
        norm2_a += float(torch.dot(da, da))
        norm2_b += float(torch.dot(db, db))
        dot += float(torch.dot(da, db))
    return math.sqrt(norm2_a), math.sqrt(norm2_b), dot


def _slerp_from_base(
    a: torch.Tensor, b: torch.Tensor, base: torch.Tensor, lam: float, dot_threshold: float, eps: float
) -> tuple[torch.Tensor, bool]:
    """``base + slerp(a - base, b - base, lam)`` in ``a.dtype``, and whether it fell back to LERP.

    Runs chunk by chunk in reused buffers of the compute dtype (float32, or float64 for float64
    weights), so the only new full-size tensor is the result. Pass 1 accumulates the norms and the
    dot product of the task vectors; pass 2 writes ``s0·a + s1·b + (1 - s0 - s1)·base``, which is
    ``base + s0·δ_A + s1·δ_B`` with fewer operations.
    """
    compute = torch.promote_types(a.dtype, torch.float32)
    size = min(_CHUNK, a.numel())
    scratch = (
        torch.empty(size, dtype=compute, device=a.device),
        torch.empty(size, dtype=compute, device=a.device),
    )
    fa, fb, fbase = a.reshape(-1), b.reshape(-1), base.reshape(-1)
    norm_a, norm_b, dot = _task_vector_stats(fa, fb, fbase, scratch)
    s0, s1, used_lerp = _slerp_coefficients(norm_a, norm_b, dot, lam, dot_threshold, eps)
    s_base = 1.0 - s0 - s1
    out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    flat_out = out.view(-1)
    for part in _chunks(fa.numel()):
        if a.dtype == compute:
            acc = torch.mul(fa[part], s0, out=flat_out[part])
        else:
            acc = scratch[0][: part.stop - part.start].copy_(fa[part]).mul_(s0)
        acc.add_(fb[part], alpha=s1)
        if s_base != 0.0:
            acc.add_(fbase[part], alpha=s_base)
        if acc.dtype != a.dtype:
            flat_out[part].copy_(acc)
    return out, used_lerp


# --------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------


def _merge_float(
    a: torch.Tensor,
    b: torch.Tensor,
    lam: float,
    method: str,
    base: torch.Tensor | None,
    dot_threshold: float,
    eps: float,
) -> tuple[torch.Tensor, bool]:
    """One floating tensor of a merge (a fresh tensor in ``a``'s dtype) and whether SLERP fell back to LERP."""
    if lam == 0.0:
        return a.clone(), False
    if lam == 1.0:
        return b.clone(), False
    if method == "lerp":
        return lerp(a, b, lam), False
    return _slerp_from_base(a, b, base, lam, dot_threshold, eps)


def merge_tensor(
    a: torch.Tensor,
    b: torch.Tensor,
    lam: float,
    method: str = "lerp",
    base: torch.Tensor | None = None,
    compute: torch.dtype | None = None,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
) -> torch.Tensor:
    """One tensor of :func:`merge_state_dicts` (a fresh tensor): λ = 0 gives ``a``, λ = 1 ``b``,
    else the LERP, or the SLERP of the task vectors from ``base``. ``compute`` (e.g. float32 for
    half-precision inputs) is the dtype the inputs are cast to first; the result keeps it.
    Non-float tensors are returned as a copy of ``a``. Arguments are checked by the caller.
    """
    if not a.is_floating_point():
        return a.clone()
    if compute is not None:
        a, b = a.to(compute), b.to(compute)
        base = base.to(compute) if base is not None else None
    return _merge_float(a, b, lam, method, base, dot_threshold, eps)[0]


def check_lambda(lam: float, extrapolate: bool = False) -> float:
    """Validate the merge coefficient: finite, and in [0, 1] unless ``extrapolate``."""
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam}")
    if not extrapolate and not 0.0 <= lam <= 1.0:
        raise ValueError(
            f"lam={lam} lies outside [0, 1] (0 = model A, 1 = model B); pass extrapolate=True "
            "(--extrapolate) to move beyond the two models on purpose"
        )
    return lam


def _listed(items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


def check_compatible(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], name_a: str = "A", name_b: str = "B"
) -> None:
    """Raise :class:`MergeError` unless both state dicts have the same keys, shapes and dtypes.

    The message lists the first mismatching tensors with both shapes or dtypes.
    """
    problems = []
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a:
        problems.append(f"{len(only_a)} tensors only in {name_a}: {_listed(only_a)}")
    if only_b:
        problems.append(f"{len(only_b)} tensors only in {name_b}: {_listed(only_b)}")
    common = [k for k in a if k in b]
    shapes = [
        f"{k!r}: {name_a} {list(a[k].shape)} vs {name_b} {list(b[k].shape)}"
        for k in common
        if a[k].shape != b[k].shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} tensors differ in shape: {_listed(shapes)}")
    dtypes = [
        f"{k!r}: {name_a} {a[k].dtype} vs {name_b} {b[k].dtype}" for k in common if a[k].dtype != b[k].dtype
    ]
    if dtypes:
        problems.append(f"{len(dtypes)} tensors differ in dtype: {_listed(dtypes)}")
    if problems:
        raise MergeError(
            f"cannot merge {name_a} and {name_b}, they are not the same architecture: "
            + "; ".join(problems)
            + ". Merge models finetuned from the same base checkpoint (and saved in the same dtype)."
        )


def _copy_equal_buffer(key: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """A non-float tensor (integer or bool buffer) must be equal in every model; return a copy."""
    first_name, first = next(iter(tensors.items()))
    for name, other in tensors.items():
        if not torch.equal(first, other):
            raise MergeError(
                f"non-float tensor {key!r} ({first.dtype}) differs between {first_name} and {name}; "
                "integer and bool buffers cannot be interpolated, so the models are not compatible"
            )
    return first.clone()


def merge_state_dicts(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    lam: float,
    method: str = "lerp",
    base: dict[str, torch.Tensor] | None = None,
    extrapolate: bool = False,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    """Interpolate two state dicts tensor by tensor; λ = 0 returns a copy of A, λ = 1 a copy of B.

    Args:
        a, b: state dicts with the same keys, shapes and dtypes.
        lam: merge coefficient λ; outside [0, 1] only with ``extrapolate``.
        method: ``"lerp"`` or ``"slerp"`` (task vectors relative to ``base``).
        base: the shared initial weights θ_init; required by SLERP, checked for compatibility and
            otherwise unused by LERP (whose result does not depend on it).
        dot_threshold, eps: SLERP's fallback to LERP for nearly parallel or ~zero task vectors.

    Returns:
        A new state dict (fresh tensors, stored dtypes kept). Non-float tensors must be equal in all
        inputs and are copied.
    """
    lam = check_lambda(lam, extrapolate)
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
    if method == "slerp" and base is None:
        raise ValueError(
            "SLERP interpolates task vectors θ - θ_init, so it needs the base state dict (base=...)"
        )
    check_compatible(a, b)
    if base is not None:
        check_compatible(a, base, "A", "base")
    merged: dict[str, torch.Tensor] = {}
    fallbacks = 0
    for key in track(list(a), desc=f"merge {method} λ={lam:g}", unit="tensor", leave=False):
        ta, tb = a[key], b[key]
        if not ta.is_floating_point():
            inputs = {"A": ta, "B": tb} if base is None else {"A": ta, "B": tb, "base": base[key]}
            merged[key] = _copy_equal_buffer(key, inputs)
        else:
            merged[key], used_lerp = _merge_float(
                ta, tb, lam, method, None if base is None else base[key], dot_threshold, eps
            )
            fallbacks += used_lerp
    if method == "slerp" and lam not in (0.0, 1.0):
        log.info(
            "slerp: %d of %d float tensors fell back to lerp (nearly parallel or unchanged)",
            fallbacks,
            sum(t.is_floating_point() for t in a.values()),
        )
    return merged


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _weights_hash(ckpt: Checkpoint) -> str:
    """sha256 of the checkpoint's weights file (from provenance when recorded, else computed)."""
    return ckpt.model_hash or file_sha256(Path(ckpt.path) / MODEL_FILE)


def _describe_base(ckpt: Checkpoint) -> str:
    base_hash = ckpt.provenance.get("base_hash")
    if not base_hash:
        return f"{ckpt.path} (provenance.json records no base_hash; kind={ckpt.provenance.get('kind', '?')})"
    return f"{ckpt.path} (base sha256 {str(base_hash)[:12]}…)"


def shared_base_hash(ca: Checkpoint, cb: Checkpoint, force: bool = False) -> str | None:
    """The sha256 of the base both checkpoints descend from, or a :class:`MergeError`.

    Compatible when both record the same ``base_hash``, or when one checkpoint *is* the other's base
    (interpolating a finetune back toward its initialisation, WARP's LITI). With ``force`` a
    mismatch or a missing record is logged as a warning and A's base hash is returned.
    """
    hash_a, hash_b = ca.provenance.get("base_hash"), cb.provenance.get("base_hash")
    if hash_a and hash_a == hash_b:
        return str(hash_a)
    weights_a, weights_b = _weights_hash(ca), _weights_hash(cb)
    if hash_b and hash_b == weights_a:  # A is B's base
        return str(hash_b)
    if hash_a and hash_a == weights_b:  # B is A's base
        return str(hash_a)
    if weights_a == weights_b:  # the same weights twice
        return str(hash_a or hash_b or weights_a)
    message = (
        f"A = {_describe_base(ca)} and B = {_describe_base(cb)} do not share a base model, so interpolating "
        "their weights is not meaningful. Merge two finetunes of the same base, or pass --force "
        "(force=True) to merge anyway; shapes and dtypes are still checked."
    )
    if not force:
        raise MergeError(message)
    log.warning("--force: %s", message)
    return str(hash_a) if hash_a else None


def config_differences(ca: Checkpoint, cb: Checkpoint) -> list[str]:
    """``"section.key: A value vs B value"`` for each difference in the model, codec and text configs.

    Finetunes of one base inherit these sections, so a difference is usually a harmless override
    (dropout, cache sizes); one that changes the architecture without changing a shape (heads,
    positions, delays) would make the merge meaningless, so callers report them.
    """
    diffs = []
    for section in ARCHITECTURE_SECTIONS:
        sa, sb = ca.config.get(section), cb.config.get(section)
        if not isinstance(sa, dict) or not isinstance(sb, dict):
            continue
        for key in sorted(sa.keys() | sb.keys()):
            if sa.get(key) != sb.get(key):
                diffs.append(f"{section}.{key}: A {sa.get(key)!r} vs B {sb.get(key)!r}")
    return diffs


def _resolve_base_dir(base: str | Path | None, ca: Checkpoint) -> Path:
    """The base checkpoint folder for SLERP: ``base``, else A's provenance ``base_dir``."""
    if base is not None:
        return Path(base)
    recorded = ca.provenance.get("base_dir")
    if not recorded:
        raise MergeError(
            f"SLERP needs the base checkpoint the finetunes started from, and {ca.path}/provenance.json "
            "records no base_dir; pass it with --base DIR (base=...)"
        )
    path = Path(recorded)
    if not path.is_absolute() and not path.exists() and (Path(ca.path) / path).exists():
        path = Path(ca.path) / path
    return path


def rebase_recorded_path(recorded: str, source_ckpt: Path, out: Path) -> str:
    """A folder path recorded in ``source_ckpt``'s provenance, re-expressed for a checkpoint written to ``out``.

    Relative paths in provenance resolve against the checkpoint's parent or, failing that, the
    nearest ancestor where they exist (as :func:`musicdistill.model.loading.resolve_codec_dir` reads them).
    """
    path = Path(recorded)
    if path.is_absolute():
        return recorded
    for ancestor in Path(source_ckpt).resolve().parents:
        if (ancestor / path).exists():
            return os.path.relpath(ancestor / path, Path(out).resolve().parent)
    return recorded


def _check_out_is_new(out: Path, inputs: list[Path]) -> None:
    for path in inputs:
        if out.resolve() == path.resolve():
            raise ValueError(
                f"out={out} is one of the input checkpoints; choose a new folder for the merged model"
            )


def _default_out(a_dir: Path, method: str, lam: float) -> Path:
    return a_dir.parent / f"merged_{method}_lam{lam:g}"


def merge_checkpoints(
    a_dir: str | Path,
    b_dir: str | Path,
    lam: float,
    method: str = "lerp",
    base: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    extrapolate: bool = False,
) -> Path:
    """Merge two checkpoint folders into a new checkpoint folder and return its path.

    Args:
        a_dir: the model at λ = 0 (e.g. the quality finetune, β = 0).
        b_dir: the model at λ = 1 (e.g. the diversity finetune).
        lam: merge coefficient; outside [0, 1] only with ``extrapolate``.
        method: ``"lerp"`` or ``"slerp"``.
        base: base checkpoint folder for SLERP; default: ``base_dir`` in A's provenance.
        out: output folder; default ``<parent of A>/merged_<method>_lam<λ>``. Must not be an input.
        force: merge even when the provenance says the models (or the SLERP base) descend from
            different bases. Never bypasses the key, shape and dtype checks.
        extrapolate: allow λ outside [0, 1].

    Differences between the model/codec/text configs of A and B are logged as warnings. The result
    has A's config and a provenance of kind ``"merged"`` naming both parents with their
    hashes, λ, the method, the shared ``base_hash`` (and the SLERP base), so it can be merged or
    evaluated like any other finetune.
    """
    lam = check_lambda(lam, extrapolate)
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    out = Path(out) if out is not None else _default_out(a_dir, method, lam)
    _check_out_is_new(out, [a_dir, b_dir])
    ca, cb = load_checkpoint(a_dir), load_checkpoint(b_dir)
    diffs = config_differences(ca, cb)
    if diffs:
        log.warning("A and B configs differ (%s); the merged model uses A's config", _listed(diffs))
    base_hash = shared_base_hash(ca, cb, force)
    provenance: dict[str, Any] = {
        "kind": "merged",
        "parents": [
            {"path": str(a_dir), "hash": _weights_hash(ca)},
            {"path": str(b_dir), "hash": _weights_hash(cb)},
        ],
        "lam": lam,
        "method": method,
        "base_hash": base_hash,
    }
    for key in ("base_dir", "codec_dir"):  # the base (for a later SLERP) and the codec (to decode samples)
        if ca.provenance.get(key):
            provenance[key] = rebase_recorded_path(ca.provenance[key], a_dir, out)
    for key in BACKBONE_PROVENANCE:  # what the weights are (e.g. a MusicGen decoder and its directory)
        if ca.provenance.get(key):
            provenance[key] = ca.provenance[key]
    base_state = None
    if method == "lerp" and base is not None:
        log.info("lerp does not depend on the base model; ignoring base=%s", base)
    if method == "slerp":
        base_dir = _resolve_base_dir(base, ca)
        _check_out_is_new(out, [base_dir])
        cbase = load_checkpoint(base_dir)
        base_weights_hash = _weights_hash(cbase)
        if base_hash and base_weights_hash != base_hash:
            message = (
                f"the SLERP base {base_dir} (sha256 {base_weights_hash[:12]}…) is not the base the finetunes "
                f"started from (sha256 {base_hash[:12]}…); pass the right --base, or --force to use it anyway"
            )
            if not force:
                raise MergeError(message)
            log.warning("--force: %s", message)
        base_state = cbase.state_dict
        provenance["base"] = {"path": str(base_dir), "hash": base_weights_hash}
        provenance["base_dir"] = str(base_dir)
        provenance["base_hash"] = base_hash or base_weights_hash
    if force:
        provenance["forced"] = True
    merged = merge_state_dicts(ca.state_dict, cb.state_dict, lam, method, base_state, extrapolate=extrapolate)
    save_checkpoint(out, merged, ca.config, provenance)
    log.info("merged %s and %s with %s at λ=%g into %s", a_dir, b_dir, method, lam, out)
    return out
