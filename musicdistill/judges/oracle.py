"""The attribute oracle: what the built-in data's clips contain, read back from audio.

Every clip becomes a fixed vector of hand-made log-mel features (:func:`clip_features`), computed
from the same front end as the default codec so that decoded log-mels need no Griffin-Lim:

- per mel band: mean, standard deviation, mean absolute frame-to-frame change, and the 10/30/50 %
  quantiles over time (the low quantiles isolate sustained sounds such as the tonic-triad pad);
- rhythm: the normalised autocorrelation of the spectral flux of four frequency bands (kick, body,
  hats, all) at lags up to 2.4 s;
- a pseudo-chroma folded from the mel bands between 250 Hz and 5 kHz.

Bins more than :data:`DYNAMIC_RANGE` below the clip's peak are raised to that level first.

Features are standardised with the training statistics and each *head* is a multinomial logistic
regression (L-BFGS, L2 penalty) trained on real clips plus their codec reconstructions. A head may
classify several attributes jointly: ``"key+mode"`` learns one class per (key, mode) pair, which
makes mode linearly separable (mode alone depends on the key through the pitch classes involved);
each attribute is then read as the argmax of its marginal (:func:`predict_attributes_mel`), and its
marginal probabilities feed the expected attribute diversity (:func:`predict_marginals_mel`).

The standardised feature vector doubles as the *independent* embedding for diversity metrics
(:func:`hand_features`): it was not trained to be diverse, so reward hacking of the learned
embedder shows up as a gap between the two diversity figures.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicdistill.config import Config, OracleConfig
from musicdistill.data.attributes import choose_heads
from musicdistill.dsp.mel_scale import hz_to_midi, mel_frequencies
from musicdistill.judges.log_mel import ClipMels, LabelledMels, mel_spec, waveform_mels
from musicdistill.judges.oracle_checks import head_checks
from musicdistill.storage.model_files import load_model_folder, save_model_folder

log = logging.getLogger(__name__)

KIND = "oracle"
#: quantiles over time kept per band
QUANTILES = (0.1, 0.3, 0.5)
#: frequency bands (Hz) whose spectral flux is autocorrelated: kick, body, hats, everything
FLUX_BANDS = ((0.0, 150.0), (150.0, 2000.0), (2000.0, 8000.0), (0.0, math.inf))
#: longest autocorrelation lag (seconds)
MAX_LAG_SECONDS = 2.4
#: mel bands folded into the pseudo-chroma (Hz)
CHROMA_RANGE = (250.0, 5000.0)
#: separator of joint class labels, e.g. "C|major"
JOINT = "|"
#: log-mel values more than this many nats (11 nats = 48 dB) below the clip's loudest bin are raised to
#: that level: codec reconstructions decode near-silent bands to the log floor while real audio and
#: Griffin-Lim resyntheses fill them with low-level noise, and features should not depend on which
DYNAMIC_RANGE = 11.0


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def band_frequencies(settings: dict[str, Any]) -> np.ndarray:
    """Centre frequencies (Hz) of the front end's mel bands ``[D]`` (the Slaney mel scale)."""
    return mel_frequencies(settings["n_mels"] + 2, settings["fmin"], settings["fmax"])[1:-1]


def num_lags(settings: dict[str, Any]) -> int:
    return max(1, round(MAX_LAG_SECONDS * settings["sample_rate"] / settings["hop_length"]))


def _flux_autocorrelation(log_mel: torch.Tensor, freqs: np.ndarray, lags: int) -> torch.Tensor:
    """``[N, D, T]`` -> ``[N, len(FLUX_BANDS) * lags]``: autocorrelation of band flux at lags 1..lags."""
    flux = (log_mel[..., 1:] - log_mel[..., :-1]).clamp_min(0)  # [N, D, T-1]
    n_fft = 1 << max(1, math.ceil(math.log2(flux.shape[-1] + lags + 1)))
    out = []
    for low, high in FLUX_BANDS:
        chosen = torch.from_numpy((freqs >= low) & (freqs < high))
        if not chosen.any():
            out.append(flux.new_zeros(flux.shape[0], lags))
            continue
        envelope = flux[:, chosen].mean(1)
        envelope = envelope - envelope.mean(-1, keepdim=True)
        spectrum = torch.fft.rfft(envelope, n=n_fft)
        acf = torch.fft.irfft(spectrum.abs().square(), n=n_fft)[:, : lags + 1]
        out.append(acf[:, 1:] / acf[:, :1].clamp_min(1e-8))
    return torch.cat(out, dim=1)


def _chroma_weights(freqs: np.ndarray) -> torch.Tensor:
    """``[12, D]``: each band in :data:`CHROMA_RANGE` spread over pitch classes (Gaussian, 0.5 semitone)."""
    midi = hz_to_midi(np.maximum(freqs, 1e-3))
    distance = (midi[None, :] - np.arange(12)[:, None] + 6.0) % 12.0 - 6.0  # [12, D] semitones
    weights = np.exp(-0.5 * (distance / 0.5) ** 2)
    weights[:, (freqs < CHROMA_RANGE[0]) | (freqs > CHROMA_RANGE[1])] = 0.0
    return torch.from_numpy(weights).float()


def _pseudo_chroma(log_mel: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[N, D, T]`` -> ``[N, 12]``: chroma of the log-mel within 12 nats of the clip's peak, summing to 1."""
    level = (log_mel - log_mel.amax(dim=(1, 2), keepdim=True)).clamp_min(-12.0) + 12.0
    chroma = torch.einsum("pd,ndt->np", weights, level) / log_mel.shape[-1]
    return chroma / chroma.sum(-1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def clip_features(log_mel: torch.Tensor, settings: dict[str, Any], batch_size: int = 512) -> torch.Tensor:
    """Log-mels ``[N, D, T]`` -> raw (unstandardised) features ``[N, F]``, F = 6 D + 4 lags + 12."""
    if log_mel.dim() != 3 or log_mel.shape[1] != settings["n_mels"] or log_mel.shape[-1] < 2:
        raise ValueError(
            f"log_mel must have shape [N, {settings['n_mels']}, T] with T >= 2, got {tuple(log_mel.shape)}"
        )
    freqs = band_frequencies(settings)
    weights = _chroma_weights(freqs)
    lags = num_lags(settings)
    out = []
    for first in range(0, log_mel.shape[0], batch_size):
        m = log_mel[first : first + batch_size].float().cpu()
        m = torch.maximum(m, m.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE)
        frames = m.shape[-1]
        ordered = m.sort(dim=-1).values
        quantiles = [ordered[..., round(q * (frames - 1))] for q in QUANTILES]
        delta = (m[..., 1:] - m[..., :-1]).abs().mean(-1)
        out.append(
            torch.cat(
                [
                    m.mean(-1),
                    m.std(-1),
                    delta,
                    *quantiles,
                    _flux_autocorrelation(m, freqs, lags),
                    _pseudo_chroma(m, weights),
                ],
                dim=1,
            )
        )
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------


@dataclass
class Head:
    """One softmax regression: ``logits = features @ weight.T + bias`` over ``classes``.

    A class label joins one value per attribute with ``|`` (``"C|major"`` for ``("key", "mode")``).
    """

    attributes: tuple[str, ...]
    classes: list[str]
    weight: torch.Tensor  # [C, F]
    bias: torch.Tensor  # [C]

    @property
    def name(self) -> str:
        return "+".join(self.attributes)


@dataclass
class AttributeOracle:
    """Feature standardisation (``mean``, ``std`` [F]) and one :class:`Head` per (group of) attribute(s)."""

    settings: dict[str, Any]
    mean: torch.Tensor
    std: torch.Tensor
    heads: list[Head]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every attribute the oracle predicts, in head order."""
        return tuple(a for head in self.heads for a in head.attributes)


def parse_heads(heads: Sequence[str]) -> list[tuple[str, ...]]:
    """``["instrument", "key+mode"]`` -> ``[("instrument",), ("key", "mode")]``; each attribute once."""
    parsed = [tuple(part.strip() for part in str(h).split("+")) for h in heads]
    seen: list[str] = []
    for group in parsed:
        if not all(group):
            raise ValueError(f"oracle.heads: {'+'.join(group)!r} has an empty attribute name")
        seen.extend(group)
    repeated = sorted({a for a in seen if seen.count(a) > 1})
    if not parsed or repeated:
        raise ValueError(
            f"oracle.heads={list(heads)} must list at least one head and each attribute once "
            f"(repeated: {repeated})"
        )
    return parsed


def joint_label(attributes: dict[str, Any] | None, group: tuple[str, ...]) -> str | None:
    """The class label of ``group`` for one clip, or None when an attribute is missing."""
    if not attributes or any(attributes.get(a) is None for a in group):
        return None
    return JOINT.join(str(attributes[a]) for a in group)


def fit_softmax(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: ``x [N, F]``, labels ``y [N]`` -> ``weight [C, F]``, ``bias [C]``.

    Minimises mean cross-entropy + ``l2`` * ||weight||^2 with L-BFGS (strong Wolfe line search).
    """
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def _standardised_features(
    mels: ClipMels, use_recon: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Standardised features of the real clips then (with ``use_recon``) their reconstructions, the
    standardisation (``mean``, ``std`` [F]) and how many times each clip appears (1 or 2)."""
    rows, repeat = (
        (torch.cat([mels.real, mels.recon]), 2) if use_recon and mels.recon is not None else (mels.real, 1)
    )
    raw = clip_features(rows, mels.settings)
    mean, std = _standardisation(raw)
    return (raw - mean) / std, mean, std, repeat


def _standardisation(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std ``[F]`` of ``raw [N, F]``; a (near-)constant feature gets std 1, so that
    rounding noise around its mean stays negligible instead of being blown up."""
    wide = raw.double()
    mean, std = wide.mean(0), wide.std(0)
    std = torch.where(std > 1e-4 * (1.0 + mean.abs()), std, torch.ones_like(std))
    return mean.float(), std.float()


def fit_hand_features(mels: ClipMels, use_recon: bool = True) -> AttributeOracle:
    """An oracle without heads: only the standardised hand-made feature space, for :func:`hand_features`
    on data without attribute labels."""
    _, mean, std, _ = _standardised_features(mels, use_recon)
    return AttributeOracle(dict(mels.settings), mean, std, [], {})


def fit_oracle(
    cfg: OracleConfig, mels: ClipMels, attributes: Sequence[dict[str, Any] | None]
) -> AttributeOracle:
    """Fit every head of ``cfg.heads`` (empty: chosen from the attributes, see
    :func:`musicdistill.data.attributes.choose_heads`) on training log-mels and their per-clip attribute dicts."""
    if len(attributes) != len(mels):
        raise ValueError(f"attributes has {len(attributes)} entries but mels has {len(mels)} clips")
    groups = parse_heads(choose_heads(cfg.heads, attributes, cfg.min_clips_per_class).require())
    if cfg.reconstructions and mels.recon is None:
        log.warning(
            "oracle.reconstructions=true but no codec reconstructions were given; fitting on real clips only"
        )
    x, mean, std, repeat = _standardised_features(mels, cfg.reconstructions)
    heads = []
    for group in groups:
        labels = [joint_label(a, group) for a in attributes] * repeat
        keep = torch.tensor([label is not None for label in labels])
        classes = sorted({label for label in labels if label is not None})
        if len(classes) < 2:
            raise ValueError(
                f"oracle head '{'+'.join(group)}': the training clips carry {len(classes)} distinct "
                f"value(s) of {list(group)}; need at least 2 (is this the built-in data? "
                "set oracle.heads to attributes your manifest has)"
            )
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[label] for label in labels if label is not None])
        weight, bias = fit_softmax(x[keep], y, len(classes), cfg.l2, cfg.iters)
        heads.append(Head(group, classes, weight, bias))
        log.info(
            "oracle head %s: %d classes, %d training rows", "+".join(group), len(classes), int(keep.sum())
        )
    return AttributeOracle(dict(mels.settings), mean, std, heads, asdict(cfg))


# --------------------------------------------------------------------------------------------
# Prediction and adherence
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def hand_features_mel(oracle: AttributeOracle, log_mel: torch.Tensor) -> torch.Tensor:
    """Standardised hand-made features ``[N, F]`` of log-mels ``[N, D, T]`` (the independent embedding)."""
    return (clip_features(log_mel, oracle.settings) - oracle.mean) / oracle.std


@torch.no_grad()
def hand_features(oracle: AttributeOracle, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Standardised hand-made features ``[N, F]`` of clips ``[N, S]`` at ``sample_rate``."""
    return hand_features_mel(oracle, waveform_mels(mel_spec(oracle.settings), wav, sample_rate))


@dataclass(frozen=True)
class Marginal:
    """One attribute's marginal class probabilities: ``probs [N, K]`` over ``values`` (``K``, sorted)."""

    values: tuple[str, ...]
    probs: np.ndarray  # [N, K], float64, rows sum to 1

    def argmax(self) -> list[str]:
        """The most probable value of each clip ``[N]`` (the first of equals, as ``torch.argmax``)."""
        return [self.values[i] for i in torch.from_numpy(self.probs).argmax(1).tolist()]


def head_marginals(head: Head, probs: torch.Tensor) -> dict[str, Marginal]:
    """The joint softmax ``probs [N, C]`` over ``head.classes`` -> each attribute of ``head`` -> its
    :class:`Marginal` ``[N, K]``: the joint probabilities summed over the classes sharing that value."""
    values = [c.split(JOINT) for c in head.classes]
    out: dict[str, Marginal] = {}
    for position, attribute in enumerate(head.attributes):
        names = sorted({v[position] for v in values})
        member = torch.tensor(
            [[v[position] == n for v in values] for n in names], dtype=probs.dtype
        )  # [K, C]
        out[attribute] = Marginal(tuple(names), (probs @ member.T).double().numpy())
    return out


def _marginal_argmax(head: Head, probs: torch.Tensor) -> list[dict[str, str]]:
    """Per clip, each attribute of ``head`` -> the value with the largest marginal probability."""
    out: list[dict[str, str]] = [{} for _ in range(probs.shape[0])]
    for attribute, marginal in head_marginals(head, probs).items():
        for row, choice in enumerate(marginal.argmax()):
            out[row][attribute] = choice
    return out


def head_probabilities(head: Head, features: torch.Tensor) -> torch.Tensor:
    """Standardised features ``[N, F]`` -> the head's softmax ``[N, C]`` over ``head.classes``."""
    return torch.softmax(features @ head.weight.T + head.bias, dim=-1)


@torch.no_grad()
def predict_attributes_mel(oracle: AttributeOracle, log_mel: torch.Tensor) -> list[dict[str, str]]:
    """Log-mels ``[N, D, T]`` (the oracle's front end) -> one ``{attribute: value}`` dict per clip."""
    x = hand_features_mel(oracle, log_mel)
    predicted: list[dict[str, str]] = [{} for _ in range(x.shape[0])]
    for head in oracle.heads:
        for row, values in enumerate(_marginal_argmax(head, head_probabilities(head, x))):
            predicted[row].update(values)
    return predicted


@torch.no_grad()
def predict_marginals_features(oracle: AttributeOracle, features: torch.Tensor) -> dict[str, Marginal]:
    """Standardised features ``[N, F]`` (:func:`hand_features_mel`) -> every attribute the oracle reads
    (in :attr:`AttributeOracle.attributes` order) -> its marginal probabilities ``[N, K]``.

    A joint head (``key+mode``) is marginalised to each of its attributes as :func:`predict_attributes_mel`
    does before its argmax, so ``Marginal.argmax()`` gives the same readings.
    """
    out: dict[str, Marginal] = {}
    for head in oracle.heads:
        out.update(head_marginals(head, head_probabilities(head, features.float())))
    return out


@torch.no_grad()
def predict_marginals_mel(oracle: AttributeOracle, log_mel: torch.Tensor) -> dict[str, Marginal]:
    """Log-mels ``[N, D, T]`` (the oracle's front end) -> attribute -> marginal probabilities ``[N, K]``."""
    return predict_marginals_features(oracle, hand_features_mel(oracle, log_mel))


@torch.no_grad()
def predict_marginals(
    oracle: AttributeOracle, wav: torch.Tensor | np.ndarray, sample_rate: int
) -> dict[str, Marginal]:
    """Clips ``[N, S]`` at ``sample_rate`` -> attribute -> marginal probabilities ``[N, K]``."""
    return predict_marginals_features(oracle, hand_features(oracle, wav, sample_rate))


@torch.no_grad()
def predict_attributes(
    oracle: AttributeOracle, wav: torch.Tensor | np.ndarray, sample_rate: int
) -> list[dict[str, str]]:
    """Clips ``[N, S]`` (or ``[N, 1, S]``) at ``sample_rate`` -> one ``{attribute: value}`` dict per clip."""
    return predict_attributes_mel(oracle, waveform_mels(mel_spec(oracle.settings), wav, sample_rate))


def attribute_adherence(predicted: dict[str, str], attributes: dict[str, Any]) -> float:
    """Fraction of the prompt's stated attributes that the generation has, in [0, 1].

    Counted attributes: those in ``attributes["stated"]`` (every attribute of ``attributes`` when it has
    no ``stated`` list) that the oracle predicts (the keys of ``predicted``). A prompt that states
    none of them has no defined adherence and returns NaN; metrics skip NaN prompts and report how
    many prompts entered (counting it as 1 or 0 would bias the mean either way).
    """
    stated = attributes.get("stated")
    names = list(stated) if stated is not None else [k for k in attributes if k != "stated"]
    counted = [a for a in names if a in predicted and attributes.get(a) is not None]
    if not counted:
        return math.nan
    return sum(str(predicted[a]) == str(attributes[a]) for a in counted) / len(counted)


def attribute_accuracy(
    predicted: Sequence[dict[str, str]], attributes: Sequence[dict[str, Any] | None]
) -> dict[str, float]:
    """Per-attribute accuracy of predictions against true attribute dicts (all attributes, stated or not)."""
    if len(predicted) != len(attributes):
        raise ValueError(f"predicted has {len(predicted)} entries but attributes has {len(attributes)}")
    names = sorted({a for p in predicted for a in p})
    out = {}
    for name in names:
        pairs = [
            (p.get(name), t.get(name)) for p, t in zip(predicted, attributes) if t and t.get(name) is not None
        ]
        if pairs:
            out[name] = sum(str(p) == str(t) for p, t in pairs) / len(pairs)
    return out


def evaluate_oracle(
    oracle: AttributeOracle, held_out: ClipMels, attributes: Sequence[dict[str, Any] | None]
) -> dict[str, dict[str, float]]:
    """Per-attribute accuracy on held-out real clips and (if present) on their codec reconstructions."""
    out = {"real": attribute_accuracy(predict_attributes_mel(oracle, held_out.real), attributes)}
    if held_out.recon is not None:
        out["recon"] = attribute_accuracy(predict_attributes_mel(oracle, held_out.recon), attributes)
    return {view: {k: round(v, 4) for k, v in accuracy.items()} for view, accuracy in out.items()}


def fit_and_save_oracle(
    cfg: Config, train: LabelledMels, held_out: LabelledMels | None, out: str | Path
) -> dict[str, Any]:
    """Fit the oracle (``oracle`` section; heads chosen from the data when ``oracle.heads`` is empty),
    measure its held-out accuracy against chance (:mod:`musicdistill.judges.oracle_checks`), save it to ``out``."""
    start = time.monotonic()
    attributes, files = [e.attributes for e in train.entries], [str(e.path) for e in train.entries]
    choice = choose_heads(cfg.oracle.heads, attributes, cfg.oracle.min_clips_per_class, files)
    oracle = fit_oracle(replace(cfg.oracle, heads=choice.require()), train.mels, attributes)
    metrics: dict[str, Any] = {"train_seconds": round(time.monotonic() - start, 1), "train_clips": len(train)}
    if held_out is not None:
        metrics["accuracy"] = evaluate_oracle(oracle, held_out.mels, [e.attributes for e in held_out.entries])
        metrics["held_out_clips"] = len(held_out)
    metrics["head_choice"] = choice.as_dict()
    metrics.update(
        head_checks(
            [(h.attributes, len(h.classes)) for h in oracle.heads],
            held_out.entries if held_out is not None else [],
            metrics.get("accuracy", {}).get("real"),
        )
    )
    save_oracle(oracle, out, metrics)
    log.info("oracle saved to %s: %s", out, metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------


def save_oracle(
    oracle: AttributeOracle, directory: str | Path, metrics: dict[str, Any] | None = None
) -> Path:
    """Write the oracle as ``model.safetensors`` + ``model.json`` into ``directory``."""
    tensors = {"features.mean": oracle.mean, "features.std": oracle.std}
    for i, head in enumerate(oracle.heads):
        tensors[f"heads.{i}.weight"] = head.weight
        tensors[f"heads.{i}.bias"] = head.bias
    meta = {
        "settings": oracle.settings,
        "heads": [{"attributes": list(h.attributes), "classes": h.classes} for h in oracle.heads],
        "num_features": int(oracle.mean.shape[0]),
        "config": oracle.config,
        "metrics": metrics or {},
    }
    return save_model_folder(directory, KIND, tensors, meta)


def load_oracle(directory: str | Path) -> AttributeOracle:
    """Read an oracle folder written by :func:`save_oracle`."""
    meta, tensors = load_model_folder(directory, KIND)
    heads = [
        Head(
            tuple(h["attributes"]),
            list(h["classes"]),
            tensors[f"heads.{i}.weight"],
            tensors[f"heads.{i}.bias"],
        )
        for i, h in enumerate(meta["heads"])
    ]
    return AttributeOracle(
        meta["settings"], tensors["features.mean"], tensors["features.std"], heads, meta.get("config", {})
    )
