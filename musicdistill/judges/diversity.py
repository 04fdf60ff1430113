"""Pairwise diversity of a prompt's generations: the cosine distances every diversity figure is made of.

One definition serves the diversity reward (:func:`musicdistill.training.losses.pairwise_diversity_reward`),
the evaluation's per-prompt diversity (:func:`pairwise_diversity`, under any embedder) and the demo's
read-out: ``d(y, y') = 1 - cos(E(y), E(y'))``. Shapes: B prompts, G generations per prompt, E width.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_distances(unit: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between the generations of each prompt: unit-norm ``[B, G, E]`` -> ``[B, G, G]`` (zero diagonal)."""
    g = unit.shape[1]
    off_diagonal = ~torch.eye(g, dtype=torch.bool, device=unit.device)
    return (1.0 - unit @ unit.transpose(1, 2)) * off_diagonal


def grouped_unit(embeddings: torch.Tensor | np.ndarray, name: str = "embeddings") -> torch.Tensor:
    """``[B, G, E]`` -> L2-normalised float64 tensor on the CPU; G >= 2 is required."""
    x = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} must have shape [B prompts, G generations, E], got {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise ValueError(f"{name} has G={x.shape[1]} generation(s) per prompt; diversity needs G >= 2")
    return F.normalize(x.detach().cpu().double(), dim=-1)


def pairwise_diversity(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    """Mean ``1 - cos`` over the ``G (G - 1) / 2`` pairs of each prompt's generations: ``[B, G, E] -> [B]``.

    Identical generations give 0, mutually orthogonal ones 1, opposite ones 2.
    """
    distances = cosine_distances(grouped_unit(embeddings))
    g = distances.shape[1]
    upper = torch.triu(torch.ones(g, g, dtype=torch.bool), diagonal=1)
    return distances[:, upper].mean(-1).numpy()
