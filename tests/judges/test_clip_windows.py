"""Band statistics and the overlapping windows through which the learned embedders read a clip."""

import pytest
import torch
from torch import nn

from musicdistill.judges.clip_windows import band_statistics, window_starts, windowed_mean


def test_windows_cover_the_clip():
    assert window_starts(20, 37) == [0]
    starts = window_starts(100, 37)
    assert starts[0] == 0 and starts[-1] == 63
    assert all(b - a <= 37 for a, b in zip(starts, starts[1:]))


def test_band_statistics_are_per_band_and_floored():
    log_mel = torch.zeros(3, 4, 10)
    log_mel[:, 1] = torch.arange(10.0)
    log_mel[:, 2] = 5.0
    mean, std = band_statistics(log_mel)
    assert mean.tolist() == pytest.approx([0.0, 4.5, 5.0, 0.0])
    assert std[1] == pytest.approx(torch.arange(10.0).repeat(3).std().item())
    assert std[0] == std[2] == pytest.approx(1e-3)


class _FirstFrame(nn.Module):
    """Reads each window's first frame (so the windowing is visible), in eval mode only."""

    n_mels = 2

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x[..., 0])


def test_windowed_mean_averages_the_windows_in_eval_mode_and_restores_the_mode():
    encoder = _FirstFrame().train()
    log_mel = torch.arange(20.0).repeat(3, 2, 1)  # [3, 2, 20], frame t holds t
    out = windowed_mean(encoder, log_mel, chunk_frames=8, device=torch.device("cpu"), batch_size=2)
    starts = window_starts(20, 8)
    assert out.shape == (3, 2)
    assert torch.allclose(out, torch.full((3, 2), sum(starts) / len(starts)))  # dropout was off
    assert encoder.training
    short = windowed_mean(encoder, log_mel[..., :5], chunk_frames=8, device=torch.device("cpu"))
    assert torch.equal(short, torch.zeros(3, 2))  # one window of the whole clip, starting at frame 0


def test_windowed_mean_names_the_wrong_band_count():
    with pytest.raises(ValueError, match=r"\[N, 2, T\]"):
        windowed_mean(_FirstFrame(), torch.zeros(1, 3, 10), 4, torch.device("cpu"))
