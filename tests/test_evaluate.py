"""Evaluation end to end on tiny models: files, metric keys, intervals, cost and the Pareto plot."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicdistill.codec import load_codec
from musicdistill.config import load_config
from musicdistill.embedding import clip_mels, front_end_settings
from musicdistill.evaluation_run import held_out_prompts, run_evaluation
from musicdistill.oracle import fit_oracle, save_oracle
from musicdistill.synth import synth_record
from musicdistill.systems import parse_systems
from musicdistill.tokens import TokenSet, save_token_set

sys.path.insert(0, str(Path(__file__).parent))
from test_demo import build_demo_run  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    paths = build_demo_run(tmp_path_factory.mktemp("eval_run"))
    codec = load_codec(paths["root"] / "codec")
    records = [synth_record(3, i, 16000, 1.0) for i in range(8)]
    audio = torch.from_numpy(np.stack([pcm / 32767.0 for _, pcm in records]).astype(np.float32))
    codes = codec.encode(audio.unsqueeze(1), 16000)
    tokens = TokenSet(codes=codes, captions=[r["caption"] for r, _ in records], splits=["test"] * 8,
                      attributes=[r["attributes"] for r, _ in records], frame_rate=codec.frame_rate,
                      cardinality=codec.cardinality)
    save_token_set(tokens, paths["root"] / "tokens")
    cfg = load_config(None, ["codec.n_mels=32"])
    mels = clip_mels(audio, 16000, front_end_settings(cfg.codec, 16000), codec)
    save_oracle(fit_oracle(cfg.oracle, mels, tokens.attributes), paths["root"] / "oracle")
    return paths


def test_held_out_prompts_are_distinct_and_seeded(tiny_run) -> None:
    from musicdistill.tokens import load_token_set

    tokens = load_token_set(tiny_run["root"] / "tokens").select("test")
    a = held_out_prompts(tokens, "test", 5, seed=1)
    b = held_out_prompts(tokens, "test", 5, seed=1)
    assert a.prompts == b.prompts and len(set(a.prompts)) == len(a.prompts) == 5
    assert all(isinstance(x, dict) for x in a.attributes)


def test_evaluate_two_cfg_scales_end_to_end(tiny_run, tmp_path: Path) -> None:
    cfg = load_config(None, ["evaluate.num_prompts=3", "evaluate.samples_per_prompt=2", "evaluate.bootstrap=200",
                             "evaluate.save_prompts=1", "device=cpu"])
    base = str(tiny_run["base"])
    systems = parse_systems([{"name": "cfg1", "checkpoint": base, "cfg_scale": 1.0, "family": "base + CFG"},
                             {"name": "cfg3", "checkpoint": base, "cfg_scale": 3.0, "family": "base + CFG"}],
                            cfg.generate, section="evaluate.systems")
    out = tmp_path / "eval"
    report = run_evaluation(cfg, systems, tiny_run["root"] / "tokens", out, embedder=None,
                            oracle=tiny_run["root"] / "oracle", scorer=None)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["systems"].keys() == {"cfg1", "cfg3"} == report["systems"].keys()
    for name, rows in (("cfg1", 1), ("cfg3", 2)):
        sys_ = saved["systems"][name]
        assert sys_["cost"]["rows_per_sample"] == rows
        div = sys_["metrics"]["diversity_independent"]
        assert div["low"] <= div["mean"] <= div["high"] and div["n"] == 3
        assert "vendi_independent" in sys_["metrics"] and "frechet_independent" in sys_["metrics"]
        adherence = sys_["metrics"]["attribute_adherence"]
        assert 0.0 <= adherence["low"] <= adherence["mean"] <= adherence["high"] <= 1.0
    with open(out / "per_prompt.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["system"] for r in rows} == {"cfg1", "cfg3"}
    assert sorted(p.name for p in (out / "samples" / "cfg3").iterdir()) == ["p000_s0.wav", "p000_s1.wav"]
    assert (out / "pareto.png").stat().st_size > 10_000
