"""Tests of LERP/SLERP weight merging, its compatibility checks and the ``merge`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from musicdistill import merging as merge_module
from musicdistill.cli import main
from musicdistill.merging import (
    MergeError,
    lerp,
    merge_checkpoints,
    merge_state_dicts,
    slerp,
)
from musicdistill.storage.checkpoint import (
    MODEL_FILE,
    PROVENANCE_FILE,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)


def _state(seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "emb.weight": torch.randn(16, 8, generator=g).to(dtype),
        "layers.0.w": torch.randn(8, 8, generator=g).to(dtype),
        "layers.0.b": torch.randn(8, generator=g).to(dtype),
        "steps": torch.tensor([3, 4], dtype=torch.int64),
    }


def _finetune(base: dict[str, torch.Tensor], seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v + scale * torch.randn(v.shape, generator=g).to(v.dtype)) if v.is_floating_point() else v.clone()
        for k, v in base.items()
    }


# --------------------------------------------------------------------------------------------
# Per-tensor maths
# --------------------------------------------------------------------------------------------


def test_slerp_of_orthogonal_unit_vectors_keeps_unit_norm() -> None:
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    mid = slerp(a, b, 0.5)
    assert torch.linalg.vector_norm(mid).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5), 0.0]), atol=1e-6)
    assert torch.linalg.vector_norm(lerp(a, b, 0.5)).item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    for lam in (0.1, 0.3, 0.9):
        assert torch.linalg.vector_norm(slerp(a, b, lam)).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)


def test_slerp_equals_lerp_for_parallel_and_zero_task_vectors() -> None:
    a = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    for b in (3.0 * a, -2.0 * a, a + 1e-5):
        assert torch.allclose(slerp(a, b, 0.3), lerp(a, b, 0.3), atol=1e-6)
    zero = torch.zeros_like(a)
    assert torch.allclose(slerp(zero, a, 0.3), 0.3 * a)


def test_slerp_matches_the_closed_form_on_a_random_pair() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = (
        torch.randn(50, generator=g, dtype=torch.float64),
        torch.randn(50, generator=g, dtype=torch.float64),
    )
    omega = math.acos(float(a @ b / (a.norm() * b.norm())))
    expected = (math.sin(0.7 * omega) * a + math.sin(0.3 * omega) * b) / math.sin(omega)
    assert torch.allclose(slerp(a.float(), b.float(), 0.3).double(), expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_interpolation_keeps_the_stored_dtype(dtype: torch.dtype) -> None:
    base = _state(0, dtype)
    a, b = _finetune(base, 1), _finetune(base, 2)
    for method in ("lerp", "slerp"):
        merged = merge_state_dicts(a, b, 0.5, method, base=base)
        assert {k: v.dtype for k, v in merged.items()} == {k: v.dtype for k, v in a.items()}
    # the average is formed in float32 and rounded once to the stored dtype
    expected = ((a["layers.0.w"].double() + b["layers.0.w"].double()) / 2).to(dtype)
    merged = merge_state_dicts(a, b, 0.5, "lerp")["layers.0.w"]
    if dtype == torch.float32:
        assert torch.allclose(merged, expected, atol=1e-6)
    else:
        assert torch.equal(merged, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lerp_of_half_types_is_the_float32_result_rounded_once(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10_000, generator=g).to(dtype), torch.randn(10_000, generator=g).to(dtype)
    for lam in (0.3, 0.7, 1 / 3):
        assert torch.equal(lerp(a, b, lam), torch.lerp(a.float(), b.float(), lam).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_slerp_merge_matches_the_whole_tensor_formula(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(merge_module, "_CHUNK", 7)  # many chunks and a ragged last one
    base = _state(0, dtype)
    a, b = _finetune(base, 1), _finetune(base, 2)
    merged = merge_state_dicts(a, b, 0.3, "slerp", base=base)
    for k in ("emb.weight", "layers.0.w", "layers.0.b"):
        da, db = a[k].float() - base[k].float(), b[k].float() - base[k].float()
        expected = (base[k].float() + slerp(da, db, 0.3)).to(dtype)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert torch.allclose(merged[k].float(), expected.float(), atol=tol), k


# --------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lerp", "slerp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_end_points_are_the_models_exactly(method: str, dtype: torch.dtype) -> None:
    base = _state(0, dtype)
    a, b = _finetune(base, 1), _finetune(base, 2)
    at0 = merge_state_dicts(a, b, 0.0, method, base=base)
    at1 = merge_state_dicts(a, b, 1.0, method, base=base)
    for k in a:
        assert torch.equal(at0[k], a[k]) and torch.equal(at1[k], b[k])
        assert at0[k].data_ptr() != a[k].data_ptr()  # fresh tensors, safe to modify or save


def test_lerp_half_is_the_average_and_slerp_differs() -> None:
    base = _state(0)
    a, b = _finetune(base, 1), _finetune(base, 2)
    merged = merge_state_dicts(a, b, 0.5, "lerp")
    assert torch.allclose(merged["emb.weight"], (a["emb.weight"] + b["emb.weight"]) / 2)
    assert torch.equal(merged["steps"], a["steps"])
    s = merge_state_dicts(a, b, 0.5, "slerp", base=base)
    da, db = a["emb.weight"] - base["emb.weight"], b["emb.weight"] - base["emb.weight"]
    assert torch.allclose(s["emb.weight"], base["emb.weight"] + slerp(da, db, 0.5), atol=1e-6)
    # two independent random task vectors are nearly orthogonal: SLERP's midpoint is longer than LERP's
    assert (s["emb.weight"] - base["emb.weight"]).norm() > 1.2 * (
        merged["emb.weight"] - base["emb.weight"]
    ).norm()


def test_slerp_needs_a_base() -> None:
    a, b = _state(1), _state(2)
    with pytest.raises(ValueError, match="base"):
        merge_state_dicts(a, b, 0.5, "slerp")


def test_mismatched_keys_shapes_and_dtypes_name_the_tensors() -> None:
    a = _state(1)
    b = _state(2)
    b["layers.0.w"] = torch.randn(8, 4)
    with pytest.raises(MergeError, match=r"'layers\.0\.w': A \[8, 8\] vs B \[8, 4\]"):
        merge_state_dicts(a, b, 0.5)
    b = _state(2)
    b["layers.0.b"] = b["layers.0.b"].half()
    with pytest.raises(MergeError, match=r"'layers\.0\.b': A torch\.float32 vs B torch\.float16"):
        merge_state_dicts(a, b, 0.5)
    b = _state(2)
    b["extra.weight"] = b.pop("emb.weight")
    with pytest.raises(MergeError, match=r"only in A: emb\.weight.*only in B: extra\.weight"):
        merge_state_dicts(a, b, 0.5)
    base = _state(0)
    base["layers.0.w"] = torch.randn(2, 2)
    with pytest.raises(MergeError, match=r"'layers\.0\.w': A \[8, 8\] vs base \[2, 2\]"):
        merge_state_dicts(a, _state(2), 0.5, "slerp", base=base)


def test_unequal_integer_buffers_are_refused() -> None:
    a, b = _state(1), _state(2)
    b["steps"] = torch.tensor([3, 5])
    with pytest.raises(MergeError, match="'steps'"):
        merge_state_dicts(a, b, 0.5)


def test_lambda_outside_unit_interval_needs_extrapolate() -> None:
    a, b = _state(1), _state(2)
    for lam in (-0.1, 1.5):
        with pytest.raises(ValueError, match="extrapolate"):
            merge_state_dicts(a, b, lam)
    merged = merge_state_dicts(a, b, 1.5, extrapolate=True)
    assert torch.allclose(
        merged["layers.0.b"], a["layers.0.b"] + 1.5 * (b["layers.0.b"] - a["layers.0.b"]), atol=1e-6
    )
    with pytest.raises(ValueError, match="finite"):
        merge_state_dicts(a, b, float("nan"), extrapolate=True)


# --------------------------------------------------------------------------------------------
# Checkpoints and the CLI
# --------------------------------------------------------------------------------------------

CONFIG = {"name": "t", "model": {"dim": 8, "layers": 1, "heads": 2}, "codec": {"kind": "melrvq"}}


def _family(tmp_path: Path, dtype: torch.dtype = torch.float32) -> tuple[Path, Path, Path]:
    """A base checkpoint and two finetunes of it, written with checkpoint.save_checkpoint."""
    base_state = _state(0, dtype)
    base = save_checkpoint(tmp_path / "base", base_state, CONFIG, {"kind": "pretrain"})
    base_hash = file_sha256(base / MODEL_FILE)
    prov = {"kind": "distill", "base_hash": base_hash, "base_dir": str(base)}
    a = save_checkpoint(tmp_path / "quality", _finetune(base_state, 1), CONFIG, {**prov, "beta": 0.0})
    b = save_checkpoint(tmp_path / "diversity", _finetune(base_state, 2), CONFIG, {**prov, "beta": 15.0})
    return base, a, b


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_merge_checkpoints_writes_a_checkpoint_with_provenance(tmp_path: Path, method: str) -> None:
    base, a, b = _family(tmp_path, torch.bfloat16)
    out = merge_checkpoints(a, b, 0.25, method, out=tmp_path / "merged")  # slerp finds the base via base_dir
    ckpt = load_checkpoint(out)
    ca, cb, cbase = load_checkpoint(a), load_checkpoint(b), load_checkpoint(base)
    expected = merge_state_dicts(ca.state_dict, cb.state_dict, 0.25, method, base=cbase.state_dict)
    assert all(torch.equal(ckpt.state_dict[k], expected[k]) for k in expected)
    assert ckpt.state_dict["emb.weight"].dtype == torch.bfloat16
    assert ckpt.config == ca.config
    prov = ckpt.provenance
    assert prov["kind"] == "merged" and prov["lam"] == 0.25 and prov["method"] == method
    assert prov["parents"] == [
        {"path": str(a), "hash": ca.model_hash},
        {"path": str(b), "hash": cb.model_hash},
    ]
    assert prov["base_hash"] == cbase.model_hash
    assert ("base" in prov) == (method == "slerp")
    assert prov["base_dir"] == str(base)


def test_merged_checkpoint_can_be_merged_again_and_with_its_base(tmp_path: Path) -> None:
    base, a, b = _family(tmp_path)
    merged = merge_checkpoints(a, b, 0.5, out=tmp_path / "m")
    again = merge_checkpoints(merged, a, 0.5, out=tmp_path / "m2")
    liti = merge_checkpoints(base, a, 0.5, out=tmp_path / "liti")  # A is a finetune of this base
    assert load_checkpoint(again).provenance["base_hash"] == load_checkpoint(liti).provenance["base_hash"]


def test_different_bases_fail_unless_forced(tmp_path: Path) -> None:
    _, a, _ = _family(tmp_path / "one")
    other_base = save_checkpoint(tmp_path / "other", _state(9), CONFIG, {"kind": "pretrain"})
    c = save_checkpoint(
        tmp_path / "c",
        _finetune(_state(9), 3),
        CONFIG,
        {"kind": "distill", "base_hash": file_sha256(other_base / MODEL_FILE)},
    )
    with pytest.raises(MergeError, match="do not share a base model.*--force"):
        merge_checkpoints(a, c, 0.5, out=tmp_path / "m")
    assert not (tmp_path / "m").exists()
    out = merge_checkpoints(a, c, 0.5, out=tmp_path / "m", force=True)
    assert load_checkpoint(out).provenance["forced"] is True
    # a SLERP base that is not the finetunes' base is a base check too
    _, a2, b2 = _family(tmp_path / "two")
    with pytest.raises(MergeError, match="not the base the finetunes started from"):
        merge_checkpoints(a2, b2, 0.5, "slerp", base=other_base, out=tmp_path / "s")
    merge_checkpoints(a2, b2, 0.5, "slerp", base=other_base, out=tmp_path / "s", force=True)


def test_force_does_not_bypass_shape_or_dtype_checks(tmp_path: Path) -> None:
    _, a, _ = _family(tmp_path)
    wrong_shape = _state(5)
    wrong_shape["layers.0.w"] = torch.randn(8, 4)
    c = save_checkpoint(tmp_path / "c", wrong_shape, CONFIG, {"kind": "distill"})
    with pytest.raises(MergeError, match="differ in shape"):
        merge_checkpoints(a, c, 0.5, out=tmp_path / "m", force=True)
    d = save_checkpoint(tmp_path / "d", _state(5, torch.float16), CONFIG, {"kind": "distill"})
    with pytest.raises(MergeError, match="differ in dtype"):
        merge_checkpoints(a, d, 0.5, out=tmp_path / "m", force=True)


def test_config_differences_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, a, b = _family(tmp_path)
    ckpt = load_checkpoint(b)
    config = {**CONFIG, "model": {**CONFIG["model"], "heads": 4}}
    e = save_checkpoint(tmp_path / "e", ckpt.state_dict, config, ckpt.provenance)
    with caplog.at_level("WARNING", logger="musicdistill.merging"):
        out = merge_checkpoints(a, e, 0.5, out=tmp_path / "m")
    assert "model.heads: A 2 vs B 4" in caplog.text
    assert load_checkpoint(out).config == CONFIG


def test_merge_checkpoints_argument_errors(tmp_path: Path) -> None:
    base, a, b = _family(tmp_path)
    with pytest.raises(ValueError, match="extrapolate"):
        merge_checkpoints(a, b, 1.2, out=tmp_path / "m")
    merge_checkpoints(a, b, 1.2, out=tmp_path / "m", extrapolate=True)
    with pytest.raises(ValueError, match="one of the input"):
        merge_checkpoints(a, b, 0.5, out=a)
    with pytest.raises(ValueError, match="method"):
        merge_checkpoints(a, b, 0.5, "ties", out=tmp_path / "m")
    prov_path = a / PROVENANCE_FILE
    prov = json.loads(prov_path.read_text())
    del prov["base_dir"]
    prov_path.write_text(json.dumps(prov))
    with pytest.raises(MergeError, match="--base"):
        merge_checkpoints(a, b, 0.5, "slerp", out=tmp_path / "s")
    assert merge_checkpoints(a, b, 0.5, "slerp", base=base, out=tmp_path / "s").is_dir()


def test_cli_merge_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, a, b = _family(tmp_path)
    out = tmp_path / "cli_merged"
    code = main(
        [
            "merge",
            "--a",
            str(a),
            "--b",
            str(b),
            "--lam",
            "0.5",
            "--method",
            "slerp",
            "--base",
            str(base),
            "--out",
            str(out),
        ]
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    assert load_checkpoint(out).provenance["method"] == "slerp"
    code = main(["merge", "--a", str(a), "--b", str(b), "--lam", "2", "--out", str(tmp_path / "x")])
    assert code == 2 and "--extrapolate" in capsys.readouterr().err
    assert (
        main(
            [
                "merge",
                "--a",
                str(a),
                "--b",
                str(b),
                "--lam",
                "2",
                "--extrapolate",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 0
    )


def test_cli_merge_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["merge", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--a", "--b", "--lam", "--method", "--base", "--out", "--force", "--extrapolate", "slerp"):
        assert flag in text


def test_cli_choices_match_the_library() -> None:
    from musicdistill.commands.merge import METHODS
    from musicdistill.merging import MERGE_METHODS

    assert tuple(METHODS) == tuple(MERGE_METHODS)


def test_merged_checkpoint_keeps_the_codec_and_base_reachable(tmp_path) -> None:
    import torch

    from musicdistill.merging import merge_checkpoints
    from musicdistill.model.loading import resolve_codec_dir
    from musicdistill.storage.checkpoint import file_sha256, save_checkpoint

    (tmp_path / "codec").mkdir()
    weights = {"w": torch.zeros(2)}
    save_checkpoint(tmp_path / "base", weights, {}, {"kind": "base", "codec_dir": "codec"})
    h = file_sha256(tmp_path / "base" / "model.safetensors")
    for name, value in (("q", 1.0), ("d", 3.0)):
        save_checkpoint(
            tmp_path / name,
            {"w": torch.full((2,), value)},
            {},
            {"kind": "distilled", "base_hash": h, "base_dir": "base", "codec_dir": "codec"},
        )
    out = merge_checkpoints(tmp_path / "q", tmp_path / "d", 0.5, out=tmp_path / "merges" / "lam_0.50")
    from musicdistill.storage.checkpoint import load_checkpoint

    prov = load_checkpoint(out).provenance
    assert (out.parent / prov["codec_dir"]).resolve() == (tmp_path / "codec").resolve()
    assert (out.parent / prov["base_dir"]).resolve() == (tmp_path / "base").resolve()
    assert resolve_codec_dir(out, prov).resolve() == (tmp_path / "codec").resolve()
