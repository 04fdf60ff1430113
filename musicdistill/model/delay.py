"""MusicGen's codebook delay pattern and the teacher-forcing shift built on it.

Codebook k is delayed by ``delays[k]`` steps (MusicGen: ``[0, 1, 2, 3]``; all zeros = the parallel
pattern). With ``D = max(delays)`` a clip of T frames becomes a sequence of ``S = T + D`` steps::

    seq[b, k, s] = codes[b, k, s - delays[k]]   if delays[k] <= s < T + delays[k]
                 = special                      otherwise (delay padding)

e.g. K = 4, T = 3, delays [0, 1, 2, 3] (P = special; a..d are the four codebooks' tokens)::

    s:   0   1   2   3   4   5
    k0: a0  a1  a2   P   P   P
    k1:  P  b0  b1  b2   P   P
    k2:  P   P  c0  c1  c2   P
    k3:  P   P   P  d0  d1  d2

Teacher forcing (:func:`teacher_forcing_batch`): the model's input at step s is the sequence at step
s - 1 for every codebook, and the input at step 0 is the special token (it doubles as BOS)::

    inputs[:, :, 0] = special,   inputs[:, :, s] = seq[:, :, s - 1]   (1 <= s < S)
    targets = seq,               logits[:, :, s] predicts targets[:, :, s]

Only the positions in :func:`valid_mask` carry real tokens; the loss and the distillation
divergence use those alone, as audiocraft does. This is also how transformers' MusicGen lays out
its sequences (``build_delay_pattern_mask`` with ``decoder_start_token_id = pad_token_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_delays(delays: Sequence[int], num_codebooks: int) -> tuple[int, ...]:
    """Validate a delay list: one non-negative integer per codebook. Returns it as a tuple."""
    out = tuple(delays)
    if len(out) != num_codebooks:
        raise ValueError(
            f"delays={list(out)} has {len(out)} entries; give one per codebook ({num_codebooks})"
        )
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in out):
        raise ValueError(f"delays={list(out)} must be non-negative integers")
    return out


def apply_delay(codes: torch.Tensor, delays: Sequence[int], special: int) -> torch.Tensor:
    """Lay frames out in the delay pattern: ``[B, K, T] -> [B, K, T + max(delays)]``.

    Positions before a codebook's delay and after its last frame hold ``special``.
    """
    _, num_codebooks, num_frames = codes.shape
    delays = check_delays(delays, num_codebooks)
    steps = num_frames + max(delays)
    seq = codes.new_full((codes.shape[0], num_codebooks, steps), special)
    for k, d in enumerate(delays):
        seq[:, k, d : d + num_frames] = codes[:, k]
    return seq


def undo_delay(seq: torch.Tensor, delays: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`apply_delay`: ``[B, K, T + max(delays), ...] -> [B, K, T, ...]``.

    Works on any trailing dimensions (e.g. per-token log-probabilities or logits).
    """
    num_codebooks = seq.shape[1]
    delays = check_delays(delays, num_codebooks)
    num_frames = seq.shape[2] - max(delays)
    if num_frames < 0:
        raise ValueError(f"sequence of {seq.shape[2]} steps is shorter than the largest delay {max(delays)}")
    return torch.stack([seq[:, k, d : d + num_frames] for k, d in enumerate(delays)], dim=1)


def valid_mask(
    num_codebooks: int, num_frames: int, delays: Sequence[int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[K, T + max(delays)]`` bool, True where the delayed sequence carries a real token."""
    delays = check_delays(delays, num_codebooks)
    steps = torch.arange(num_frames + max(delays), device=device)
    start = torch.tensor(delays, device=device).unsqueeze(1)
    return (steps >= start) & (steps < start + num_frames)


def shift_right(seq: torch.Tensor, special: int) -> torch.Tensor:
    """Teacher-forcing inputs: ``[B, K, S] -> [B, K, S]`` with step 0 = special and step s = seq[s - 1]."""
    inputs = torch.empty_like(seq)
    inputs[:, :, 0] = special
    inputs[:, :, 1:] = seq[:, :, :-1]
    return inputs


def teacher_forcing_batch(
    codes: torch.Tensor, delays: Sequence[int], special: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything a teacher-forced pass needs from undelayed frames.

    Args:
        codes: ``[B, K, T]`` token ids in ``[0, V)``.
        delays: per-codebook delays (K entries).
        special: the special token id (V): delay padding and BOS.

    Returns:
        ``inputs [B, K, S]`` (model input, see the module docstring), ``targets [B, K, S]``
        (the delayed sequence; special at padding) and ``mask [K, S]`` (True at real tokens),
        with ``S = T + max(delays)``.
    """
    targets = apply_delay(codes, delays, special)
    inputs = shift_right(targets, special)
    mask = valid_mask(codes.shape[1], codes.shape[2], delays, device=codes.device)
    return inputs, targets, mask
