"""Set up an evaluation from folders: held-out prompts from a token set, judges, a model pool."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import yaml

from musicdistill.config import Config
from musicdistill.data.tokens import TokenSet, load_token_set
from musicdistill.evaluation.evaluate import EvalPrompts, evaluate_systems, run_systems
from musicdistill.evaluation.system_store import SystemStore, evaluation_context, files_digest
from musicdistill.evaluation.systems import SystemSpec
from musicdistill.judges.judging import CodedClips, build_judges
from musicdistill.model.loading import LoadedGenerator, load_generator
from musicdistill.runtime import resolve_device
from musicdistill.storage.checkpoint import CONFIG_FILE

log = logging.getLogger(__name__)


def held_out_prompts(tokens: TokenSet, split: str, count: int, seed: int) -> EvalPrompts:
    """``count`` distinct captions of ``split`` (a seeded choice) with their clips' attributes."""
    first: dict[str, dict[str, Any] | None] = {}
    for caption, attrs in zip(tokens.captions, tokens.attributes):
        first.setdefault(caption, attrs)
    captions = list(first)
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [captions[i] for i in order[: min(count, len(captions))]]
    if len(chosen) < count:
        log.warning("split %s has only %d distinct captions; evaluating on all of them", split, len(chosen))
    return EvalPrompts(prompts=chosen, attributes=[first[c] for c in chosen])


class ModelPool:
    """Loads checkpoints on demand and keeps the most recent few (systems of one checkpoint share it).

    Checkpoints that name the same text encoder share one loaded copy of it.
    """

    def __init__(self, device: torch.device, capacity: int = 2) -> None:
        self.device, self.capacity = device, capacity
        self._models: OrderedDict[str, LoadedGenerator] = OrderedDict()
        self._encoders: dict[str, Any] = {}

    def __call__(self, checkpoint: str) -> LoadedGenerator:
        if checkpoint not in self._models:
            while len(self._models) >= self.capacity:
                self._models.popitem(last=False)
            encoder_name = read_text_encoder_name(Path(checkpoint))
            loaded = load_generator(
                checkpoint, device=self.device, text_encoder=self._encoders.get(encoder_name)
            )
            self._encoders.setdefault(loaded.text_encoder.name, loaded.text_encoder)
            self._models[checkpoint] = loaded
        self._models.move_to_end(checkpoint)
        return self._models[checkpoint]


def read_text_encoder_name(checkpoint: Path) -> str | None:
    """The ``text.encoder`` a checkpoint's config names (None when unreadable)."""
    try:
        config = yaml.safe_load((checkpoint / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return (config.get("text") or {}).get("encoder")


def run_evaluation(
    cfg: Config,
    systems: list[SystemSpec],
    tokens_dir: Path,
    out: Path,
    *,
    embedder: Path | None,
    oracle: Path | None,
    scorer: Path | None,
    second_embedder: Path | None = None,
    reuse: tuple[Path, ...] = (),
    statistics: bool = True,
) -> dict[str, Any]:
    """Evaluate ``systems`` on held-out prompts of ``tokens_dir``; see :func:`evaluate_systems`.

    Each system's result is kept under ``out/systems/`` as it finishes (an interrupted evaluation
    resumes there), and a system already evaluated with the same settings, weights, prompts and
    judges under ``out`` or one of the ``reuse`` folders is taken from there. With ``statistics``
    off the systems are only evaluated and stored (no metrics.json): the main job's front stage.
    """
    ec = cfg.evaluate
    device = resolve_device(cfg.device)
    tokens = load_token_set(tokens_dir).select(ec.split)
    prompts = held_out_prompts(tokens, ec.split, ec.num_prompts, ec.seed)
    pool = ModelPool(device)
    codec = pool(systems[0].checkpoint).codec
    if codec is None:
        raise FileNotFoundError(f"{systems[0].checkpoint} records no codec; evaluation decodes generations")
    judges = build_judges(device, embedder, oracle, scorer, second_embedder, cfg.embed.trust_remote_code)
    # real held-out clips as codes: the judges read them as they read generations
    reference = CodedClips(codec, tokens.codes[: ec.num_prompts * ec.samples_per_prompt])
    duration = tokens.num_frames / tokens.frame_rate
    judge_dirs = [embedder, oracle, scorer, second_embedder]
    context = evaluation_context(
        prompts.prompts, ec.samples_per_prompt, duration, ec.seed, ec.batch_size, files_digest(judge_dirs)
    )
    store = SystemStore(out, context, reuse)
    shared = {
        "group": ec.samples_per_prompt,
        "duration": duration,
        "seed": ec.seed,
        "batch_size": ec.batch_size,
        "device": device,
        "loader": pool,
        "store": store,
        "save_prompts": ec.save_prompts,
    }
    if not statistics:
        results = run_systems(systems, prompts, judges, out, **shared)
        return {"systems": {r.spec.name: r.seconds for r in results}, "num_prompts": len(prompts.prompts)}
    return evaluate_systems(
        systems,
        prompts,
        judges,
        out,
        **shared,
        reference=reference,
        num_resamples=ec.bootstrap,
        teacher_gamma=cfg.distill.gamma,
    )
