"""The demo process's memory: resident set size after start-up and after the slider's 11 positions.

    python bench/demo_memory.py --run runs/default [--dtype fp32] [--teacher] [--dial merge|conditioned]
    python bench/demo_memory.py --tiny-musicgen /tmp/mg-run   # builds a tiny random MusicGen run there

Prints one JSON line (MiB): the student's weights, the process's RSS after the imports (the
runtime), after the engine loaded (the models, the text encoder, the codec and the dial's
endpoints), after moving the slider through λ = 0, 0.1, ..., 1 with one 1-variation request at
each, and the growth those moves caused in units of the student's weights. It runs against
whichever musicdistill is importable, so the same script measures an older checkout (its engine
took ``cache_size``; this one holds the endpoints once and writes the merge in place).

``--compute`` prints the weight memory the demo holds for musicgen-small and musicgen-medium
(decoder parameters from their published configs) instead of measuring.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import sys
from pathlib import Path

#: decoder parameters (what the dial merges), counted on the meta device from the released decoder
#: configs (small: width 1024, 24 layers, FFN 4096; medium: 1536, 48, 6144; 4 codebooks of 2048)
MUSICGEN_DECODERS = {"musicgen-small": 419.58e6, "musicgen-medium": 1837.56e6}


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (MiB), from /proc/self/status: ``VmRSS`` in all, ``RssAnon`` the
    process's own memory, ``RssFile`` file pages mapped in (shared and reclaimable)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    """Peak resident set size so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compute(dtype_bytes: int) -> dict[str, dict[str, float]]:
    """GB of decoder weights the demo holds (T5 and EnCodec, frozen and shared, come on top): the
    live student plus the dial's two endpoints, with the CFG teacher, and the former merge cache
    of 11 slider positions for comparison."""
    out = {}
    for name, params in MUSICGEN_DECODERS.items():
        decoder = params * dtype_bytes / 1e9
        out[name] = {
            "student_gb": round(decoder, 2),
            "dial_gb": round(3 * decoder, 2),
            "dial_and_teacher_gb": round(4 * decoder, 2),
            "former_cache_of_11_and_teacher_gb": round((3 + 11 + 1) * decoder, 2),
        }
    return out


def build_tiny_musicgen_run(root: Path) -> Path:
    """A run folder over a tiny random MusicGen: its base and two 'students' (the base's decoder
    plus small perturbations), as the main job would write them."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from musicgen_fixture import build_tiny_musicgen

    from musicdistill.config import config_to_dict, load_config, save_config
    from musicdistill.model.loading import save_musicgen_base
    from musicdistill.model.musicgen import MusicgenBackbone
    from musicdistill.storage.checkpoint import MODEL_FILE, file_sha256, save_checkpoint

    model, tokenizer = build_tiny_musicgen()
    model.save_pretrained(root / "musicgen")
    tokenizer.save_pretrained(root / "musicgen")
    cfg = load_config(
        None, ["model.backbone=musicgen", f"model.pretrained={root / 'musicgen'}", "generate.duration=0.2"]
    )
    save_config(cfg, root / "config.yaml")
    save_musicgen_base(cfg, root / "base")
    base_hash = file_sha256(root / "base" / MODEL_FILE)
    state = MusicgenBackbone.from_musicgen(model).state_dict()
    for seed, role, beta in ((1, "quality", 0.0), (2, "diversity", 15.0)):
        gen = torch.Generator().manual_seed(seed)
        weights = {
            k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in state.items()
        }
        prov = {
            "kind": "distilled",
            "role": role,
            "beta": beta,
            "base_hash": base_hash,
            "backbone": "musicgen",
        }
        save_checkpoint(
            root / role, weights, config_to_dict(cfg), {**prov, "pretrained": str(root / "musicgen")}
        )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="a run folder (musicdistill run)")
    parser.add_argument(
        "--tiny-musicgen",
        metavar="DIR",
        help="build a run of a tiny random MusicGen (tests/musicgen_fixture.py) in DIR and measure it",
    )
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--teacher", action="store_true", help="load the CFG teacher too")
    parser.add_argument(
        "--dial",
        default="merge",
        choices=("merge", "conditioned"),
        help="serve the merge of the run's students (default) or its conditioned student",
    )
    parser.add_argument("--compute", action="store_true", help="print musicgen-small/medium figures")
    args = parser.parse_args()
    if args.compute:
        print(json.dumps({"fp32": compute(4), "half": compute(2)}, indent=2))
        return
    import torch

    from musicdistill.demo import engine as demo_engine

    torch.set_num_threads(1)
    run = build_tiny_musicgen_run(Path(args.tiny_musicgen)) if args.tiny_musicgen else Path(args.run)
    runtime, runtime_anon = rss_mb(), rss_mb("RssAnon")
    try:  # where an older checkout keeps them: in the engine
        from musicdistill.demo import run_folders
    except ImportError:
        run_folders = demo_engine
    try:
        from musicdistill.demo import loading as demo_loading
        from musicdistill.demo import requests as demo_requests
    except ImportError:
        demo_loading = demo_requests = demo_engine
    finds = inspect.signature(run_folders.find_run_checkpoints).parameters
    paths = (
        run_folders.find_run_checkpoints(run, args.dial)
        if "dial" in finds
        else run_folders.find_run_checkpoints(run)
    )
    if not args.teacher:
        kept = {"conditioned": paths.conditioned} if "dial" in finds else {}
        paths = run_folders.DemoPaths(
            quality=paths.quality, diversity=paths.diversity, embedder=paths.embedder, **kept
        )
    accepts = inspect.signature(demo_loading.load_engine).parameters
    kwargs = {"dtype": args.dtype} if "dtype" in accepts else {}
    engine = demo_loading.load_engine(paths, "cpu", **kwargs)
    loaded, loaded_anon = rss_mb(), rss_mb("RssAnon")
    weights = sum(p.numel() * p.element_size() for p in engine.student.model.parameters())
    for i in range(11):
        request = demo_requests.DemoRequest(
            prompt="a calm piano melody",
            lam=i / 10,
            num_variations=1,
            duration=engine.limits.min_duration,
            seed=0,
            temperature=1.0,
            compare_teacher=False,
        )
        engine.run(request)
    after, after_anon, after_file = rss_mb(), rss_mb("RssAnon"), rss_mb("RssFile")
    print(
        json.dumps(
            {
                "code": ("conditioned" if args.dial == "conditioned" else "dial")
                if "dtype" in accepts
                else "merge cache",
                "dtype": args.dtype,
                "teacher": bool(args.teacher),
                "student_weights_mib": round(weights / 2**20, 2),
                "rss_runtime_mib": round(runtime, 1),
                "rss_loaded_mib": round(loaded, 1),
                "rss_after_11_positions_mib": round(after, 1),
                "peak_mib": round(peak_mb(), 1),
                "slider_growth_in_student_weights": round((after - loaded) * 2**20 / weights, 2),
                "anon_runtime_mib": round(runtime_anon, 1),
                "anon_loaded_mib": round(loaded_anon, 1),
                "anon_after_11_positions_mib": round(after_anon, 1),
                "file_after_11_positions_mib": round(after_file, 1),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
