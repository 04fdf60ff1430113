"""Stored evaluation results: exact round trip, reuse only on a matching key, samples brought along."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from musicdistill.evaluation.system_store import (
    RESULT_TENSORS,
    StoredSystem,
    SystemStore,
    evaluation_context,
    files_digest,
)
from musicdistill.evaluation.systems import SystemSpec


def spec(tmp_path: Path, cfg_scale: float = 3.0) -> SystemSpec:
    ckpt = tmp_path / "ckpt"
    if not ckpt.is_dir():
        ckpt.mkdir()
        save_file({"w": torch.ones(3)}, str(ckpt / "model.safetensors"))
    return SystemSpec(
        name=f"base CFG {cfg_scale:g}",
        checkpoint=str(ckpt),
        cfg_scale=cfg_scale,
        temperature=1.0,
        top_k=0,
        top_p=0.0,
    )


def stored() -> StoredSystem:
    return StoredSystem(
        per_prompt={"attribute_adherence": [0.1, math.nan, 1 / 3], "diversity_reward": [0.5, 0.25, 0.125]},
        embeddings={"reward": torch.randn(6, 4), "independent": torch.randn(6, 2)},
        seconds=1.5,
        frames=600,
    )


def context(prompts=("a", "b", "c"), seed=0) -> str:
    return evaluation_context(list(prompts), 2, 4.0, seed, 256, files_digest([None]))


def test_a_stored_result_comes_back_exactly(tmp_path: Path) -> None:
    store = SystemStore(tmp_path / "eval", context())
    s, original = spec(tmp_path), stored()
    store.save(s, original)
    back = store.load(s)
    assert back is not None and (back.seconds, back.frames) == (1.5, 600)
    assert back.per_prompt["diversity_reward"] == original.per_prompt["diversity_reward"]
    assert math.isnan(back.per_prompt["attribute_adherence"][1])
    assert back.per_prompt["attribute_adherence"][2] == 1 / 3
    for name, emb in original.embeddings.items():
        assert torch.equal(back.embeddings[name], emb)


def test_a_changed_setting_weight_prompt_or_file_is_evaluated_again(tmp_path: Path) -> None:
    s = spec(tmp_path)
    SystemStore(tmp_path / "eval", context()).save(s, stored())
    assert SystemStore(tmp_path / "eval", context(seed=1)).load(s) is None
    assert SystemStore(tmp_path / "eval", context(prompts=("a", "b", "d"))).load(s) is None
    assert SystemStore(tmp_path / "eval", context()).load(spec(tmp_path, cfg_scale=2.0)) is None
    save_file({"w": torch.zeros(3)}, str(Path(s.checkpoint) / "model.safetensors"))  # new weights
    assert SystemStore(tmp_path / "eval", context()).load(s) is None


def test_a_damaged_result_is_not_used(tmp_path: Path) -> None:
    s = spec(tmp_path)
    folder = SystemStore(tmp_path / "eval", context()).save(s, stored())
    save_file({"per_prompt.x": torch.zeros(3, dtype=torch.float64)}, str(folder / RESULT_TENSORS))
    assert SystemStore(tmp_path / "eval", context()).load(s) is None


def test_a_result_from_another_folder_brings_its_samples(tmp_path: Path) -> None:
    s = spec(tmp_path)
    SystemStore(tmp_path / "front", context()).save(s, stored())
    (tmp_path / "front" / "samples" / s.slug).mkdir(parents=True)
    (tmp_path / "front" / "samples" / s.slug / "p000_s0.wav").write_bytes(b"RIFF")
    store = SystemStore(tmp_path / "eval", context(), reuse=(tmp_path / "front",))
    assert store.load(s) is not None
    assert (tmp_path / "eval" / "samples" / s.slug / "p000_s0.wav").read_bytes() == b"RIFF"
    # now held by the evaluation itself: it resumes without the front folder
    assert SystemStore(tmp_path / "eval", context()).load(s) is not None


def test_judges_digest_follows_their_files(tmp_path: Path) -> None:
    judge = tmp_path / "embedder"
    judge.mkdir()
    (judge / "model.safetensors").write_bytes(b"one")
    first = files_digest([judge, None])
    (judge / "model.safetensors").write_bytes(b"two")
    assert files_digest([judge, None]) != first


def test_the_code_that_samples_and_judges_is_part_of_the_key() -> None:
    from musicdistill.evaluation import system_store

    root = Path(system_store.__file__).resolve().parent.parent
    for entry in system_store.CODE:
        assert (root / entry).exists(), entry
    assert len(system_store.code_digest()) == 64
