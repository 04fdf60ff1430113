"""The configuration's schema: every section as a dataclass, every key with one line of documentation
and, where it has one, its valid range (see :func:`opt`). What is built on it (the dotted keys,
their docs, the sections, serialisation to a dict and a stable hash) is :mod:`musicdistill.config.keys`.

Reading, overriding and validating a config is :mod:`musicdistill.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the largest classifier-free guidance scale any setting accepts (1 = no guidance)
MAX_CFG_SCALE = 50.0


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


def opt(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field with a one-line doc and an optional range or set of choices."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """A nested config section field."""
    return field(default_factory=cls, metadata={"doc": doc})


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Training audio: the built-in synthesised set, or the user's own manifest."""

    manifest: str = opt(
        "", "user manifest (JSONL/CSV) or folder of audio + .txt captions; empty = built-in data"
    )
    num_clips: int = opt(8000, "number of clips the built-in synthesiser writes", ge=10, le=1_000_000)
    sample_rate: int = opt(16000, "sample rate every clip is resampled to (Hz)", ge=8000, le=96000)
    duration: float = opt(
        4.0, "clip length in seconds; longer clips are cropped, shorter padded", gt=0.25, le=60.0
    )
    seed: int = opt(0, "seed of the built-in synthesiser (splits come from a hash of each caption)", ge=0)
    workers: int = opt(2, "processes used by the synthesiser; reader threads for user audio", ge=1, le=64)
    strict: bool = opt(False, "fail on the first bad clip instead of skipping it")
    min_duration: float = opt(0.5, "user clips with less audio (s) are skipped as too short", ge=0.0, le=60.0)
    window_hop: float = opt(
        0.0,
        "a file longer than duration is cut into clips starting this many seconds apart; "
        "0 = duration (windows that touch)",
        ge=0.0,
        le=3600.0,
    )
    last_window: str = opt(
        "drop",
        "the final window of a long file that would run past its end: drop it, or pad it with "
        "silence (kept when it holds at least min_duration seconds)",
        choices=("drop", "pad"),
    )


@dataclass
class CodecConfig:
    """The audio tokenizer: the offline default codec, or EnCodec."""

    kind: str = opt("melrvq", "codec family", choices=("melrvq", "encodec_hf", "encodec"))
    from_dir: str = opt(
        "",
        "a fitted codec directory to use as it is (e.g. assets/codec): the main job's codec stage copies "
        "it instead of fitting one; '' = fit (or load EnCodec) as the fields below say",
    )
    pretrained: str = opt(
        "", "local directory (or hub id when online) of an EnCodec model; only for encodec kinds"
    )
    n_mels: int = opt(128, "mel bands of the default codec", ge=16, le=512)
    n_fft: int = opt(1024, "FFT size of the default codec", ge=64, le=8192)
    hop_length: int = opt(640, "hop in samples; frame rate = sample_rate / hop_length", ge=32, le=8192)
    fmin: float = opt(30.0, "lowest mel frequency (Hz)", ge=0.0)
    fmax: float = opt(8000.0, "highest mel frequency (Hz), at most sample_rate / 2", gt=0.0)
    power: float = opt(
        0.25, "the codebooks quantise mel power ** power (loudness-like compression)", gt=0.0, le=1.0
    )
    num_codebooks: int = opt(
        4, "codebooks K (residual for melrvq; for EnCodec it picks the bandwidth)", ge=1, le=4
    )
    cardinality: int = opt(256, "entries per codebook V", ge=2, le=1024)
    kmeans_iters: int = opt(20, "Lloyd iterations per codebook", ge=1, le=500)
    max_fit_frames: int = opt(150_000, "frames sampled from the training audio to fit the codebooks", ge=1000)
    griffin_lim_iters: int = opt(16, "Griffin-Lim iterations when decoding to audio", ge=1, le=1000)
    seed: int = opt(0, "seed of the k-means initialisation", ge=0)


@dataclass
class TextConfig:
    """The frozen text encoder that conditions the generator."""

    encoder: str = opt(
        "minilm", "'minilm' (packaged all-MiniLM-L6-v2) or a local Hugging Face encoder directory"
    )
    max_tokens: int = opt(64, "text tokens kept per prompt", ge=1, le=512)
    max_prompt_chars: int = opt(512, "longest prompt accepted, in characters", ge=1, le=100_000)
    cache_size: int = opt(4096, "prompt encodings kept in memory (LRU); 0 = no cache", ge=0, le=10_000_000)


@dataclass
class ModelConfig:
    """The token decoder: our native generator, or a pretrained MusicGen."""

    backbone: str = opt(
        "native",
        "'native' (built from the fields below) or 'musicgen' (a transformers MusicGen "
        "from model.pretrained, with its own T5 and EnCodec)",
        choices=("native", "musicgen"),
    )
    pretrained: str = opt(
        "",
        "with backbone=musicgen: local MusicGen directory (hub id only when online); "
        "the shape fields below are then ignored",
    )
    dim: int = opt(256, "model width D", ge=8, le=8192)
    layers: int = opt(4, "decoder layers", ge=1, le=96)
    heads: int = opt(4, "attention heads; must divide dim", ge=1, le=128)
    ff_mult: int = opt(4, "feed-forward width as a multiple of dim", ge=1, le=16)
    dropout: float = opt(0.0, "dropout in attention and feed-forward", ge=0.0, lt=1.0)
    positions: str = opt("rope", "position encoding", choices=("rope", "learned"))
    activation: str = opt("gelu", "feed-forward activation", choices=("gelu", "swiglu"))
    text_fusion: str = opt(
        "cross",
        "how text enters: cross-attention to the encoder states (MusicGen), 'sum' (their "
        "masked mean, projected, added to every input step: audiocraft's sum fuser) or 'both'",
        choices=("cross", "sum", "both"),
    )
    delays: list = opt([0, 1, 2, 3], "per-codebook delay (MusicGen's delay pattern); all zero = parallel")
    max_frames: int = opt(
        256, "longest sequence in frames (context length, delay steps included)", ge=8, le=100_000
    )


@dataclass
class PretrainConfig:
    """Base-model pretraining (teacher-forced cross-entropy with condition dropout)."""

    from_dir: str = opt(
        "",
        "a pretrained base checkpoint to start from (e.g. assets/base): the main job's base stage copies it "
        "in float32 instead of pretraining; '' = pretrain as the fields below say",
    )
    steps: int = opt(1500, "optimizer steps", ge=1)
    batch_size: int = opt(32, "clips per step", ge=1, le=65536)
    lr: float = opt(1e-3, "peak AdamW learning rate", gt=0.0, le=1.0)
    warmup_steps: int = opt(50, "linear warm-up steps before cosine decay", ge=0)
    min_lr_ratio: float = opt(0.1, "final learning rate as a fraction of the peak", ge=0.0, le=1.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", ge=0.0, le=1.0)
    grad_clip: float = opt(1.0, "gradient-norm clip; 0 disables", ge=0.0)
    cond_dropout: float = opt(0.2, "probability of replacing a caption by the null condition", ge=0.0, le=1.0)
    bf16: bool = opt(True, "bf16 autocast for forward and backward")
    val_every: int = opt(250, "steps between validation-loss evaluations", ge=1)
    ckpt_every: int = opt(500, "steps between checkpoints", ge=1)
    val_batches: int = opt(4, "validation batches per evaluation", ge=1)
    max_minutes: float = opt(0.0, "stop after this many minutes of training; 0 = no limit", ge=0.0)
    seed: int = opt(0, "seed of initialisation, batching and dropout", ge=0)


@dataclass
class GenerateConfig:
    """Sampling settings."""

    num_samples: int = opt(4, "samples per prompt", ge=1, le=1024)
    duration: float = opt(4.0, "seconds of audio per sample", gt=0.0)
    temperature: float = opt(1.0, "softmax temperature; 0 = greedy", ge=0.0, le=10.0)
    top_k: int = opt(0, "keep the k most likely tokens; 0 = all", ge=0)
    top_p: float = opt(
        0.0, "nucleus sampling mass; 0 = off (takes precedence over top_k when > 0)", ge=0.0, le=1.0
    )
    cfg_scale: float = opt(
        3.0, "classifier-free guidance scale; 1 = off (one model row per sample)", ge=0.0, le=MAX_CFG_SCALE
    )
    batch_size: int = opt(32, "sequences decoded together", ge=1, le=65536)
    seed: int = opt(0, "sampling seed", ge=0)


@dataclass
class DistillConfig:
    """Diversity-rewarded CFG distillation (docs/method.md sections 3-4)."""

    steps: int = opt(150, "optimizer steps", ge=1)
    prompts_per_step: int = opt(
        16, "prompts B per step (split across ranks when distributed)", ge=1, le=65536
    )
    group_size: int = opt(2, "rollouts G per prompt; the diversity reward compares them", ge=2, le=64)
    beta: float = opt(
        0.0,
        "weight of the diversity reward of 'musicdistill distill'; 0 = the quality model "
        "(the main job sets each student's beta itself: run.students)",
        ge=0.0,
        le=1000.0,
    )
    gamma: float = opt(3.0, "CFG scale of the frozen teacher", ge=0.0, le=MAX_CFG_SCALE)
    divergence: str = opt(
        "reverse_kl", "distillation divergence", choices=("reverse_kl", "forward_kl", "jeffreys", "gjsd")
    )
    divergence_beta: float = opt(
        0.5, "mixing weight of jeffreys / gjsd (TRL GKD semantics for gjsd)", ge=0.0, le=1.0
    )
    confident_weight: float = opt(
        0.0,
        "extra weight kappa of the divergence at tokens where the teacher is confident (its top "
        "probability >= confident_threshold count 1 + kappa times); 0 = the paper's loss",
        ge=0.0,
        le=100.0,
    )
    confident_threshold: float = opt(
        0.5, "teacher top probability at which a token counts as confident (confident_weight)", gt=0.0, lt=1.0
    )
    temperature: float = opt(1.0, "student sampling temperature during rollouts", gt=0.0, le=10.0)
    mode: str = opt(
        "on_policy",
        "where sequences come from in 'musicdistill distill': the student (on_policy), the CFG "
        "teacher sampled once (teacher), or the dataset (dataset); the main job sets it itself",
        choices=("on_policy", "teacher", "dataset"),
    )
    offline_pool: int = opt(512, "sequences sampled once from the teacher in mode=teacher", ge=1)
    reinforce_normalize: str = opt(
        "tokens",
        "REINFORCE term per valid token (comparable with the KL) or per sequence",
        choices=("tokens", "sequence"),
    )
    advantage_norm: str = opt(
        "none",
        "scale of the diversity reward's advantages: none (reward units) or group (each prompt's "
        "advantages divided by their standard deviation, as in GRPO; beta then weighs unit-scale terms)",
        choices=("none", "group"),
    )
    lr: float = opt(2e-4, "peak AdamW learning rate", gt=0.0, le=1.0)
    warmup_steps: int = opt(10, "linear warm-up steps, then constant", ge=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0.0, le=1.0)
    grad_clip: float = opt(1.0, "gradient-norm clip; 0 disables", ge=0.0)
    bf16: bool = opt(True, "bf16 autocast for the teacher and student forwards")
    eval_every: int = opt(50, "steps between held-out evaluations (teacher KL, golden metric)", ge=1)
    eval_prompts: int = opt(16, "held-out prompts per evaluation", ge=1)
    ckpt_every: int = opt(50, "steps between resumable snapshots", ge=1)
    max_nonfinite: int = opt(5, "consecutive non-finite steps before the run stops", ge=1)
    seed: int = opt(0, "seed of prompt sampling and rollouts", ge=0)
    parallel: str = opt(
        "ddp",
        "how several torchrun processes share the work: ddp (a whole student, its gradients and AdamW "
        "state on every GPU) or fsdp (each sharded over the GPUs; `musicdistill plan` says which fits)",
        choices=("ddp", "fsdp"),
    )
    fsdp_teacher: str = opt(
        "auto",
        "with parallel=fsdp: shard the frozen CFG teacher too, replicate it (in bf16 on GPUs), or auto "
        "(replicate where the memory plan says it fits the GPU, shard otherwise)",
        choices=("auto", "shard", "replicate"),
    )
    activation_checkpointing: bool = opt(
        False, "with parallel=fsdp: recompute each block's activations in the backward (less memory)"
    )


@dataclass
class ListeningConfig:
    """Listening-test export: systems x prompts -> anonymised, loudness-matched stimuli and a rating page."""

    systems: list = opt(
        [],
        "systems to compare: mappings with name and checkpoint, optional cfg_scale, temperature, "
        "top_k, top_p (default: the generate section) and codec (default: the checkpoint's)",
    )
    prompts: list = opt([], "text prompts every system generates clips for")
    prompts_file: str = opt("", "text file with one prompt per line, added after listening.prompts")
    samples_per_prompt: int = opt(
        2, "generations per system and prompt; >= 2 for diversity trials", ge=1, le=64
    )
    duration: float = opt(4.0, "seconds per stimulus", gt=0.0, le=60.0)
    seed: int = opt(
        0, "export seed: sampling, stimulus ids, attention checks and every rater's trial order", ge=0
    )
    out: str = opt("", "export folder; empty = <runs_dir>/<name>/listening")
    sample_rate: int = opt(
        0, "sample rate of the stimuli (Hz); 0 = the highest of the systems' codecs", ge=0, le=192000
    )
    loudness_lufs: float = opt(
        -23.0, "integrated loudness of every stimulus (LUFS, ITU-R BS.1770)", ge=-60.0, le=-5.0
    )
    peak_dbfs: float = opt(
        -1.0, "sample-peak ceiling the limiter enforces after normalisation (dBFS)", ge=-20.0, le=0.0
    )
    diversity_pairs: int = opt(
        1, "pairs per system and prompt rated for how different they are; 0 = none", ge=0, le=100
    )
    attention_checks: int = opt(
        1, "stimuli shown twice to check that a rater answers consistently", ge=0, le=20
    )
    require_playback: bool = opt(True, "raters must play every clip of a trial before they can answer")
    title: str = opt("Music listening test", "title shown on the rating page")


@dataclass
class EmbedConfig:
    """The contrastive audio embedder: the diversity reward model (docs/method.md section 4)."""

    pretrained: str = opt(
        "",
        "local folder of a pretrained audio embedder (a transformers CLAP model, or an audio encoder such as "
        "HuBERT) used as the reward and the Fréchet space instead of training one; empty = train it",
    )
    trust_remote_code: bool = opt(
        False,
        "run the Python code a pretrained embedder's folder ships (its config's auto_map), as the released MERT "
        "checkpoints need; only for folders you trust",
    )
    dim: int = opt(128, "embedding width E (outputs are L2-normalised)", ge=8, le=4096)
    channels: int = opt(96, "channels of the 1-D conv encoder over log-mel frames", ge=8, le=4096)
    chunk_seconds: float = opt(
        1.5, "length of each chunk of a positive pair; two must fit in one clip", gt=0.1, le=60.0
    )
    temperature: float = opt(0.1, "InfoNCE temperature", gt=0.0, le=10.0)
    steps: int = opt(300, "optimizer steps", ge=1)
    batch_size: int = opt(
        128, "clips per step: one positive pair each, the other clips are negatives", ge=2, le=65536
    )
    lr: float = opt(2e-3, "peak AdamW learning rate (linear warm-up, cosine decay)", gt=0.0, le=1.0)
    weight_decay: float = opt(1e-4, "AdamW weight decay", ge=0.0, le=1.0)
    reconstructions: bool = opt(
        True, "also train on codec reconstructions: each chunk is real or reconstructed"
    )
    gain_jitter: float = opt(
        0.3, "std of a random log-gain added to each training chunk (log mel-power units)", ge=0.0, le=10.0
    )
    eq_jitter: float = opt(
        0.0,
        "std (log units) of a smooth random spectral tilt/EQ added to each view independently; > 0 makes the "
        "embedder care less about timbre (what captions fix most often) and more about notes and rhythm",
        ge=0.0,
        le=10.0,
    )
    pitch_jitter: int = opt(
        0,
        "largest shift (mel bands; one band is about 0.5-1.5 semitones at 128 bands over 30-8000 Hz) of each view; "
        "> 0 makes the embedder care less about exact pitches (the key) and more about register and rhythm",
        ge=0,
        le=16,
    )
    max_minutes: float = opt(0.0, "stop after this many minutes of training; 0 = no limit", ge=0.0)
    seed: int = opt(0, "seed of initialisation, batching and augmentation", ge=0)


@dataclass
class SecondEmbedConfig:
    """The second audio embedder: evaluation-only diversity, independent of the reward (2-D conv, VICReg,
    trained on the other half of the training split)."""

    dim: int = opt(
        128, "representation width E (embeddings are standardised and L2-normalised)", ge=8, le=4096
    )
    channels: int = opt(
        8, "channels of the first 2-D conv block (the next two have twice as many)", ge=2, le=512
    )
    hidden: int = opt(128, "width of the per-time-step layer before pooling over time", ge=8, le=4096)
    expander: int = opt(256, "width of the VICReg expander (training only)", ge=8, le=8192)
    chunk_seconds: float = opt(
        1.5, "length of each training view; at most the clip duration", gt=0.1, le=60.0
    )
    max_shift_seconds: float = opt(
        0.2, "the two views of a segment start at most this far apart", ge=0.0, le=10.0
    )
    invariance: float = opt(25.0, "VICReg weight of the view-matching (mean squared error) term", ge=0.0)
    variance: float = opt(25.0, "VICReg weight of the per-dimension standard-deviation hinge", ge=0.0)
    covariance: float = opt(1.0, "VICReg weight of the off-diagonal covariance penalty", ge=0.0)
    time_mask: float = opt(0.2, "each view has one time span of up to this fraction masked", ge=0.0, lt=1.0)
    freq_mask: float = opt(0.15, "each view has one band span of up to this fraction masked", ge=0.0, lt=1.0)
    steps: int = opt(200, "optimizer steps", ge=1)
    batch_size: int = opt(64, "clips per step (two views each)", ge=2, le=65536)
    lr: float = opt(2e-3, "peak AdamW learning rate (linear warm-up, cosine decay)", gt=0.0, le=1.0)
    weight_decay: float = opt(1e-4, "AdamW weight decay", ge=0.0, le=1.0)
    reconstructions: bool = opt(True, "each view is the real clip or its codec reconstruction, at random")
    gain_jitter: float = opt(0.3, "std of a random log-gain added to each view", ge=0.0, le=10.0)
    max_minutes: float = opt(0.0, "stop after this many minutes of training; 0 = no limit", ge=0.0)
    seed: int = opt(0, "seed of initialisation, batching and augmentation", ge=0)


@dataclass
class ScorerConfig:
    """The joint text-audio scorer (the MuLan/CLAP part): text adherence = cosine of the two towers."""

    text_encoder: str = opt(
        "minilm", "frozen sentence encoder: 'minilm' or a local Hugging Face encoder directory"
    )
    dim: int = opt(128, "joint embedding width", ge=8, le=4096)
    channels: int = opt(96, "channels of the audio tower's conv encoder", ge=8, le=4096)
    text_hidden: int = opt(256, "hidden width of the text projection MLP", ge=8, le=8192)
    crop_seconds: float = opt(
        2.4, "random crop of each training clip (seconds); whole clips at inference", gt=0.1, le=600.0
    )
    init_temperature: float = opt(
        0.07, "initial temperature of the (learned) contrastive logit scale", gt=0.0, le=10.0
    )
    max_clips: int = opt(
        4000,
        "training clips used at most (a seeded random subset): the frozen text encoder "
        "encoding every caption once is the main cost",
        ge=2,
    )
    steps: int = opt(300, "optimizer steps", ge=1)
    batch_size: int = opt(128, "caption-clip pairs per step", ge=2, le=65536)
    lr: float = opt(2e-3, "peak AdamW learning rate (linear warm-up, cosine decay)", gt=0.0, le=1.0)
    weight_decay: float = opt(1e-4, "AdamW weight decay", ge=0.0, le=1.0)
    reconstructions: bool = opt(True, "also train on codec reconstructions of the clips")
    gain_jitter: float = opt(0.3, "std of a random log-gain added to each training clip", ge=0.0, le=10.0)
    max_minutes: float = opt(0.0, "stop after this many minutes of training; 0 = no limit", ge=0.0)
    seed: int = opt(0, "seed of initialisation, batching and augmentation", ge=0)


@dataclass
class OracleConfig:
    """The attribute oracle: softmax regressions on hand-made log-mel features, one per labelled attribute."""

    heads: list = opt(
        [],
        "one classifier per entry; 'a+b' classifies the pair jointly and predicts both; empty = "
        "from the data: the built-in data's tuned heads (instrument, tempo, key+mode, register, "
        "drums), else every categorical attribute with 2+ values of min_clips_per_class clips each",
    )
    min_clips_per_class: int = opt(
        8,
        "with oracle.heads empty, an attribute becomes a head when each of its values has this many "
        "training clips (from 2+ files)",
        ge=1,
        le=100_000,
    )
    l2: float = opt(
        1e-3, "L2 penalty on the weights (per feature, features are standardised)", ge=0.0, le=100.0
    )
    iters: int = opt(100, "L-BFGS iterations per classifier", ge=1, le=10000)
    reconstructions: bool = opt(True, "also train on codec reconstructions of the clips")


@dataclass
class EvaluateConfig:
    """Evaluation of systems on held-out prompts (musicdistill evaluate; the main job's evaluate stage)."""

    systems: list = opt(
        [],
        "systems: mappings with name, checkpoint, optional family, cfg_scale, temperature, "
        "top_k, top_p; empty in the main job = base, CFG and temperature sweeps (run.cfg_scales, "
        "run.temperatures), distilled, merges",
    )
    split: str = opt("test", "held-out split the prompts come from", choices=("valid", "test"))
    num_prompts: int = opt(32, "held-out prompts (distinct captions)", ge=1, le=100_000)
    samples_per_prompt: int = opt(4, "samples per prompt and system; >= 2 for diversity", ge=2, le=256)
    seed: int = opt(0, "sampling seed, the same for every system", ge=0)
    batch_size: int = opt(
        256, "sequences decoded together (256: 21 % faster than 64 on 2 CPU cores)", ge=1, le=65536
    )
    bootstrap: int = opt(
        10000,
        "bootstrap resamples for the 95% intervals (each bound's Monte-Carlo error is reported)",
        ge=100,
        le=1_000_000,
    )
    save_prompts: int = opt(4, "prompts whose samples are written as wav files", ge=0)


@dataclass
class RunConfig:
    """Settings only the main job (``musicdistill run``) reads: which models it trains and compares.

    The main job trains every student of ``students`` with one ``distill`` section, each with its own β
    and distill changes (:mod:`musicdistill.config.students`; ``distill.beta`` and ``distill.mode``
    are read only by ``musicdistill distill``, which trains one model), and merges the pairs of
    ``merges``.
    """

    students: dict = opt(
        {
            "quality": {"role": "quality", "beta": 0.0},
            "diversity": {"role": "diversity", "beta": 15.0},
            "control": {"role": "control"},
        },
        "the students the main job distils: name -> {role: quality|diversity|control|student, beta, "
        "distill: {distill keys that differ}}; a control copies the diversity student with beta 0; "
        "name: null drops one",
    )
    merges: list = opt(
        [{"a": "quality", "b": "diversity", "lambdas": [0.25, 0.5, 0.75]}],
        "LERP merges between named students: [{a, b, lambdas}], lambda 0 = a, 1 = b; C4's candidates "
        "are the merges of the quality and diversity students",
    )
    conditioned: bool = opt(
        False,
        "also distil one conditioned student (docs/method.md 4.1) into <run>/conditioned: the diversity "
        "student's settings, its beta as beta_max, the diversity weight w an input; claim C6",
    )
    conditioned_w: list = opt(
        [0.0, 0.25, 0.5, 0.75, 1.0], "the diversity weights w at which the conditioned student is evaluated"
    )
    conditioned_hidden: int = opt(
        64, "hidden units of the conditioned student's diversity dial", ge=1, le=4096
    )
    conditioned_dial_lr_scale: float = opt(
        1.0,
        "learning rate of the conditioned student's dial as a multiple of its distill lr (its output "
        "layer starts at zero)",
        gt=0.0,
        le=1000.0,
    )
    compare_offline: bool = opt(
        False,
        "also distil offline (distill.mode=teacher, beta 0) into <run>/offline, for claim C5 "
        "(on-policy against offline)",
    )
    cfg_scales: list = opt(
        [1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 4.0],
        "CFG scales of the base's CFG front the main job evaluates (evaluate.systems empty); 1 and "
        "distill.gamma are always on it",
    )
    temperatures: list = opt(
        [0.7, 0.85, 1.0],
        "temperatures of the base's temperature front (no CFG) the main job evaluates; 1 is always on it",
    )


@dataclass
class Config:
    """The whole configuration; each command reads the sections it needs."""

    name: str = opt("default", "run name; outputs go to <runs_dir>/<name>")
    runs_dir: str = opt("runs", "folder that holds every run")
    device: str = opt("auto", "torch device: auto, cpu, cuda, cuda:N")
    report_to: str = opt(
        "none",
        "training rows also go to: none, or tensorboard (<out>/tensorboard; pip install 'musicdistill[tensorboard]')",
        choices=("none", "tensorboard"),
    )
    data: DataConfig = section(DataConfig, "training audio")
    codec: CodecConfig = section(CodecConfig, "audio tokenizer")
    text: TextConfig = section(TextConfig, "text encoder")
    model: ModelConfig = section(ModelConfig, "token decoder")
    pretrain: PretrainConfig = section(PretrainConfig, "base-model pretraining")
    generate: GenerateConfig = section(GenerateConfig, "sampling")
    distill: DistillConfig = section(DistillConfig, "CFG distillation with the diversity reward")
    evaluate: EvaluateConfig = section(EvaluateConfig, "evaluation on held-out prompts")
    listening: ListeningConfig = section(ListeningConfig, "listening-test export")
    embed: EmbedConfig = section(EmbedConfig, "contrastive audio embedder (diversity reward)")
    second_embed: SecondEmbedConfig = section(
        SecondEmbedConfig, "second audio embedder (evaluation diversity, independent of the reward)"
    )
    scorer: ScorerConfig = section(ScorerConfig, "joint text-audio scorer (text adherence)")
    oracle: OracleConfig = section(OracleConfig, "attribute oracle (the labels of the data)")
    run: RunConfig = section(RunConfig, "settings only the main job, musicdistill run, reads")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name
