"""Losses and rewards of diversity-rewarded CFG distillation, as pure functions.

Shapes: N sequences (N = B·G when there are G samples per prompt, prompt-major: the G samples of
a prompt are consecutive), K codebooks, T frames, V codebook size, E embedding width.

The finetuning objective (docs/method.md sections 1, 3-4) is *maximised* as ``QD = -L_distill + beta·D``;
the loss minimised here is therefore::

    loss = token_divergence(...) + beta * reinforce_loss(...)          (see combined_loss)

where ``reinforce_loss = -mean(advantage · log π(y|x))`` is the REINFORCE surrogate whose gradient
is minus the policy gradient of the diversity D. All computations run in float32 whatever the dtype
of the logits, and the teacher never receives gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from musicdistill.judges.diversity import cosine_distances

DIVERGENCES = ("reverse_kl", "forward_kl", "jeffreys", "gjsd")
REINFORCE_NORMALIZATIONS = ("sequence", "tokens")


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _valid_mask(mask: torch.Tensor | None, shape: torch.Size, name: str = "mask") -> torch.Tensor:
    """Broadcast a ``[N, K, T]`` or ``[K, T]`` boolean mask (None = all valid) to ``shape = [N, K, T]``."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = valid position), got dtype {mask.dtype}")
    if mask.shape == shape:
        return mask
    if mask.dim() == 2 and mask.shape == shape[1:]:
        return mask.unsqueeze(0).expand(shape)
    raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected [N, K, T] = {tuple(shape)} or [K, T]")


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if logits.dim() != 4:
        raise ValueError(f"{name} must have shape [N, K, T, V], got {tuple(logits.shape)}")


def _check_groups(n: int, group_size: int, name: str) -> None:
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (samples per prompt), got {group_size}")
    if n % group_size != 0:
        raise ValueError(f"{name} has {n} entries, not a multiple of group_size={group_size}")


# --------------------------------------------------------------------------------------------
# Distillation divergences (docs/method.md section 3)
# --------------------------------------------------------------------------------------------


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over the last axis from log-probabilities; terms with p = 0 count 0. ``[..., V] -> [...]``."""
    p = logp.exp()
    # mask the log-ratio, not the product, so p = 0 entries give neither NaN values nor NaN gradients
    log_ratio = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * log_ratio).sum(-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy ``-Σ p log p`` over the last axis from log-probabilities. ``[..., V] -> [...]``."""
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 ``log softmax(logits / temperature)`` over the last axis."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return F.log_softmax(logits, dim=-1)


def _divergence(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str, beta: float
) -> torch.Tensor:
    """Per-position divergence ``[M, V] x [M, V] -> [M]`` (log-probabilities in, float32)."""
    if kind == "reverse_kl":
        return _kl(student_logp, teacher_logp)
    if kind == "forward_kl":
        return _kl(teacher_logp, student_logp)
    if kind == "jeffreys":  # a zero-weight term is skipped, so 0·inf never turns into NaN
        if beta in (0.0, 1.0):
            return _divergence(student_logp, teacher_logp, "forward_kl" if beta else "reverse_kl", beta)
        return (1.0 - beta) * _kl(student_logp, teacher_logp) + beta * _kl(teacher_logp, student_logp)
    # gjsd, TRL GKDTrainer.generalized_jsd_loss semantics
    if beta == 0.0:
        return _kl(teacher_logp, student_logp)
    if beta == 1.0:
        return _kl(student_logp, teacher_logp)
    mixture = torch.logsumexp(
        torch.stack([student_logp + math.log(1.0 - beta), teacher_logp + math.log(beta)]), dim=0
    )
    return beta * _kl(teacher_logp, mixture) + (1.0 - beta) * _kl(student_logp, mixture)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "reverse_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    confident_weight: float = 0.0,
    confident_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-vocabulary divergence between student and (CFG) teacher at every valid token.

    Args:
        student_logits: ``[N, K, T, V]`` logits of the student π_θ (gradients flow into these).
        teacher_logits: ``[N, K, T, V]`` logits of the teacher, e.g. CFG-combined; detached here.
        mask: ``[N, K, T]`` or ``[K, T]`` bool, True at valid (non delay-padding) positions; None = all.
        kind: which divergence, with p_s = softmax(student / temperature), p_t likewise:

            - ``reverse_kl``: KL(p_s ‖ p_t), mode seeking; the paper's loss and the default.
            - ``forward_kl``: KL(p_t ‖ p_s), mode covering.
            - ``jeffreys``: ``(1 - beta)·KL(p_s ‖ p_t) + beta·KL(p_t ‖ p_s)`` (BOND); beta = 0.5 is
              half the symmetric Jeffreys divergence, beta = 0 reverse KL, beta = 1 forward KL.
            - ``gjsd``: TRL ``GKDTrainer.generalized_jsd_loss`` exactly: beta = 0 is forward KL,
              beta = 1 reverse KL, otherwise with ``log m = logsumexp(log p_s + log(1 - beta),
              log p_t + log beta)`` the loss is ``beta·KL(p_t ‖ m) + (1 - beta)·KL(p_s ‖ m)``.
              Near the ends it tends to ``beta·forward`` and ``(1 - beta)·reverse`` KL, so its scale
              jumps at beta = 0 and 1 (as in TRL); the gradient direction is continuous.

            Note that ``beta`` weights the *forward* KL in ``jeffreys`` but the teacher in ``gjsd``;
            both follow their source (BOND, TRL).
        beta: mixing weight in [0, 1] for ``jeffreys`` and ``gjsd``; ignored by the plain KLs.
        temperature: both logits are divided by it before the softmax (as in TRL GKD).
        confident_weight: κ >= 0; a token where the teacher's largest probability is at least
            ``confident_threshold`` counts ``1 + κ`` times (our choice: it protects what the teacher is
            sure of, such as the attributes a caption states, from the diversity reward). 0 = every
            token counts once (the paper's loss; computed exactly as without the option).
        confident_threshold: τ in (0, 1), the teacher probability that makes a token confident.

    Returns:
        ``(loss, per_sequence)``: ``per_sequence`` ``[N]`` is the divergence summed over the valid
        positions and codebooks of each sequence (the paper's per-prompt loss); ``loss`` is the scalar
        ``per_sequence.sum() / number of valid tokens`` (token-normalised, our choice; 0 when no
        token is valid). Computed in float32.
    """
    _check_logits(student_logits, "student_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits has shape {tuple(teacher_logits.shape)}, student_logits "
            f"{tuple(student_logits.shape)}; they must match"
        )
    if kind not in DIVERGENCES:
        raise ValueError(f"kind must be one of {DIVERGENCES}, got {kind!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = student_logits.shape[0]
    valid = _valid_mask(mask, student_logits.shape[:3]).to(student_logits.device)
    seq_index = torch.arange(n, device=student_logits.device).view(n, 1, 1).expand_as(valid)[valid]
    student_logp = _log_softmax(student_logits[valid], temperature)  # [M, V], M valid tokens
    teacher_logp = _log_softmax(teacher_logits.detach()[valid], temperature)
    per_token = _divergence(student_logp, teacher_logp, kind, float(beta))  # [M]
    if confident_weight < 0.0 or not 0.0 < confident_threshold < 1.0:
        raise ValueError(
            f"confident_weight={confident_weight} must be >= 0 and confident_threshold={confident_threshold} "
            "must lie strictly between 0 and 1"
        )
    if confident_weight > 0.0:
        confident = teacher_logp.detach().amax(dim=-1) >= math.log(confident_threshold)  # [M]
        per_token = per_token * (1.0 + confident_weight * confident.to(per_token.dtype))
    per_sequence = torch.zeros(n, dtype=torch.float32, device=per_token.device).index_add(
        0, seq_index, per_token
    )
    loss = per_token.sum() / max(per_token.numel(), 1)
    return loss, per_sequence


# --------------------------------------------------------------------------------------------
# Diversity reward and REINFORCE (docs/method.md section 4)
# --------------------------------------------------------------------------------------------


def pairwise_diversity_reward(embeddings: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each sample's mean cosine distance to its siblings: ``[B·G, E] -> [B·G]``.

    ``r_i = 1/(G-1) · Σ_{j≠i} (1 - cos(e_i, e_j))`` within each group of ``G = group_size``
    consecutive rows (prompt-major). Rows are L2-normalised here, so the result is a true cosine
    distance for any embedding. Identical embeddings give 0, orthogonal ones 1, opposite ones 2.
    The reward is a constant of the policy: callers compute it without gradients. Distillation's
    reward (:func:`musicdistill.training.distill.reward_terms`) is this function.
    """
    return _mean_sibling_distance(pairwise_distances(embeddings, group_size)).reshape(-1)


def _mean_sibling_distance(distances: torch.Tensor) -> torch.Tensor:
    """The reward of each sample from its group's distances: ``[B, G, G] -> [B, G]``."""
    return distances.sum(-1).div(distances.shape[-1] - 1)


def pairwise_distances(embeddings: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cosine distances between the samples of each group: ``[B·G, E] -> [B, G, G]`` (zero diagonal)."""
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape [B*G, E], got {tuple(embeddings.shape)}")
    _check_groups(embeddings.shape[0], group_size, "embeddings")
    e = F.normalize(embeddings.float(), dim=-1).view(-1, group_size, embeddings.shape[1])  # [B, G, E]
    return cosine_distances(e)


def leave_one_out_advantages(distances: torch.Tensor) -> torch.Tensor:
    """Advantages of the pairwise diversity reward with a baseline that does not depend on y_i: ``[B, G, G] -> [B·G]``.

    ``A_i = r_i - b_i``. The reward ``r_i`` (mean distance to the siblings) involves every sibling, so
    the usual RLOO baseline ``mean_{j≠i} r_j`` would contain ``d(y_j, y_i)``, depend on ``y_i`` and, for
    G = 2, cancel the reward exactly (both samples share one distance). Instead:

    - G >= 3: ``b_i`` = mean distance over the pairs of siblings that leave sample i out. Its
      expectation equals ``E[r_i]``; advantages sum to 0 within each group (test);
    - G = 2: no pair leaves a sample out; ``b_i`` = mean reward of the *other* prompts' groups in
      the batch (independent samples), or 0 when the batch has a single prompt.
    """
    if distances.dim() != 3 or distances.shape[1] != distances.shape[2]:
        raise ValueError(f"distances must have shape [B, G, G], got {tuple(distances.shape)}")
    b, g, _ = distances.shape
    if g < 2:
        raise ValueError(f"group_size must be >= 2 for a diversity reward, got {g}")
    d = distances.float()
    rewards = _mean_sibling_distance(d)  # [B, G]
    if g >= 3:
        pair_sum = d.sum(dim=(1, 2)) / 2  # [B]: every pair once
        without_i = pair_sum[:, None] - d.sum(-1)  # pairs not involving i
        baseline = without_i / ((g - 1) * (g - 2) / 2)
    elif b > 1:
        group_mean = rewards.mean(-1)  # [B]
        baseline = ((group_mean.sum() - group_mean) / (b - 1))[:, None].expand(b, g)
    else:
        baseline = torch.zeros_like(rewards)
    return (rewards - baseline).reshape(-1)


def group_normalized(advantages: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Advantages divided by their group's standard deviation: ``[B·G] -> [B·G]``.

    Per-group normalisation (as in GRPO): every prompt's rollouts then push with the same strength,
    whether its samples are already far apart or nearly identical. The advantages of
    :func:`leave_one_out_advantages` keep their sign and their zero sum within each group; a group
    whose advantages are all equal stays at zero (``eps`` guards the division).
    """
    if advantages.dim() != 1:
        raise ValueError(f"advantages must have shape [B*G], got {tuple(advantages.shape)}")
    _check_groups(advantages.shape[0], group_size, "advantages")
    grouped = advantages.float().view(-1, group_size)  # [B, G]
    std = grouped.std(dim=-1, unbiased=False, keepdim=True)  # [B, 1]
    return (grouped / (std + eps)).reshape(-1)


def sequence_logprob(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``log π(y|x) = Σ_t Σ_k log softmax(logits / temperature)[y_t,k]`` over valid positions.

    Args:
        logits: ``[N, K, T, V]`` policy logits at each position (teacher-forced on ``tokens``).
        tokens: ``[N, K, T]`` sampled token ids; entries at invalid positions may hold anything
            (e.g. a special padding id ≥ V) and are ignored.
        mask: ``[N, K, T]`` or ``[K, T]`` bool, True at valid positions; None = all.
        temperature: the sampling temperature, so the log-probability is that of the distribution
            the tokens were drawn from.

    Returns:
        ``[N]`` float32 sequence log-probabilities (differentiable w.r.t. ``logits``).
    """
    _check_logits(logits, "logits")
    if tokens.shape != logits.shape[:3]:
        raise ValueError(
            f"tokens has shape {tuple(tokens.shape)}; expected [N, K, T] = {tuple(logits.shape[:3])}"
        )
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = _valid_mask(mask, logits.shape[:3]).to(logits.device)
    safe_tokens = tokens.masked_fill(~valid, 0).long()
    logp = _log_softmax(logits, temperature)
    token_logp = logp.gather(-1, safe_tokens.unsqueeze(-1)).squeeze(-1)  # [N, K, T]
    return torch.where(valid, token_logp, torch.zeros_like(token_logp)).sum(dim=(1, 2))


def reinforce_loss(
    seq_logprob: torch.Tensor,
    advantages: torch.Tensor,
    normalize: str = "sequence",
    num_tokens: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE surrogate loss (to minimise): ``[B·G] x [B·G] -> scalar``.

    ``normalize="sequence"``: ``-mean_i(A_i · log π(y_i|x))``. Its gradient is minus the sequence-level
    policy gradient, so its scale grows with the number of tokens per sequence (K·T).

    ``normalize="tokens"``: ``-Σ_i A_i · log π(y_i|x) / num_tokens`` with ``num_tokens`` the number of
    valid tokens in the batch (``mask.sum()``), the same normaliser as :func:`token_divergence`. Both
    terms of ``kl_loss + beta·reinforce_loss`` are then per-token averages, which keeps ``beta``
    comparable across sequence lengths. For equal-length sequences this is the "sequence" value
    divided by K·T.

    Advantages are detached: the reward is a constant of the policy.
    """
    if seq_logprob.shape != advantages.shape or seq_logprob.dim() != 1:
        raise ValueError(
            f"seq_logprob {tuple(seq_logprob.shape)} and advantages {tuple(advantages.shape)} must both be [B*G]"
        )
    if normalize not in REINFORCE_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {REINFORCE_NORMALIZATIONS}, got {normalize!r}")
    weighted = advantages.detach().float() * seq_logprob.float()
    if normalize == "sequence":
        return -weighted.mean()
    if num_tokens is None:
        raise ValueError('normalize="tokens" needs num_tokens (the number of valid tokens, mask.sum())')
    count = float(num_tokens)
    if count <= 0:
        raise ValueError(f"num_tokens must be > 0, got {num_tokens}")
    return -weighted.sum() / count


def combined_loss(kl_loss: torch.Tensor, pg_loss: torch.Tensor, beta: float) -> torch.Tensor:
    """``kl_loss + beta · pg_loss``: minimising it maximises ``QD = -L_distill + beta·D``.

    ``kl_loss`` comes from :func:`token_divergence` (per-token mean), ``pg_loss`` from
    :func:`reinforce_loss` (already negated). ``beta = 0`` is the pure distillation (quality) model;
    the paper's diversity model uses 15 with its own normalisation, so sweep beta here, with
    ``normalize="tokens"`` when the two terms should share a scale.
    """
    if not beta >= 0.0:
        raise ValueError(f"beta (diversity weight) must be >= 0, got {beta}")
    return kl_loss + beta * pg_loss


def policy_entropy(
    logits: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Mean per-token entropy (nats) of ``softmax(logits / temperature)`` over valid positions.

    ``logits`` ``[N, K, T, V]``, ``mask`` ``[N, K, T]`` or ``[K, T]`` bool -> scalar float32. Used for
    logging (entropy collapse is the classic failure of reverse-KL distillation); detach it there.
    """
    _check_logits(logits, "logits")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = _valid_mask(mask, logits.shape[:3]).to(logits.device)
    entropy = _entropy(_log_softmax(logits[valid], temperature))  # [M]
    return entropy.sum() / max(entropy.numel(), 1)
