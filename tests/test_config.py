"""Config loading: unknown keys, ranges, overrides, round trips, and the shipped YAML files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from musicdistill.cli import build_parser, main
from musicdistill.commands import codec as codec_cmd
from musicdistill.commands import distill as distill_cmd
from musicdistill.commands import evaluate as evaluate_cmd
from musicdistill.commands import run as run_cmd
from musicdistill.commands.common import check_overrides, declared_reads, load_command_config
from musicdistill.commands.config import key_lines
from musicdistill.config import (
    MOVED_KEYS,
    Config,
    ConfigError,
    DistillConfig,
    ModelConfig,
    config_hash,
    config_keys,
    config_sections,
    config_to_dict,
    describe_fields,
    load_config,
    load_saved_config,
    save_config,
    section_from_dict,
    student_distill_config,
)
from musicdistill.config.students import parse_students
from musicdistill.pipeline import main_job, run_systems, stages
from musicdistill.pipeline.runner import stage_hash

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.pretrain.cond_dropout == pytest.approx(0.2)


def test_unknown_key_names_key_and_closest(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("pretrain:\n  stepz: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "pretrain.stepz" in msg and "pretrain.steps" in msg and str(p) in msg


def test_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'pretrain.steps'"):
        load_config(None, ["train.steps=200"])


def test_range_checked_before_work() -> None:
    with pytest.raises(ConfigError, match=r"pretrain.cond_dropout=1.5 is out of range; it must be <= 1.0"):
        load_config(None, ["pretrain.cond_dropout=1.5"])
    with pytest.raises(ConfigError, match="model.positions"):
        load_config(None, ["model.positions=alibi"])


def test_type_errors_name_field() -> None:
    with pytest.raises(ConfigError, match="pretrain.steps: expected an integer"):
        load_config(None, ["pretrain.steps=ten"])
    with pytest.raises(ConfigError, match="pretrain.bf16: expected true or false"):
        load_config(None, ["pretrain.bf16=3"])


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="must divide"):
        load_config(None, ["model.dim=100", "model.heads=3"])
    with pytest.raises(ConfigError, match="one delay per codebook"):
        load_config(None, ["model.delays=[0,1]"])


def test_group_normalised_advantages_need_three_rollouts_per_prompt() -> None:
    with pytest.raises(ConfigError, match=r"advantage_norm=group needs distill.group_size >= 3 \(got 2\)"):
        load_config(None, ["distill.advantage_norm=group", "distill.group_size=2"])
    cfg = load_config(None, ["distill.advantage_norm=group", "distill.group_size=3"])
    assert cfg.distill.advantage_norm == "group"


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["pretrain.steps"])


def test_overrides_apply_and_parse_yaml_values() -> None:
    cfg = load_config(None, ["pretrain.steps=200", "model.delays=[0,0,0,0]", "pretrain.bf16=false"])
    assert cfg.pretrain.steps == 200
    assert cfg.model.delays == [0, 0, 0, 0]
    assert cfg.pretrain.bf16 is False


def test_save_load_round_trip_and_hash(tmp_path: Path) -> None:
    cfg = load_config(None, ["name=x", "pretrain.steps=7"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(None, ["pretrain.steps=8"])) != config_hash(cfg)
    model = section_from_dict(ModelConfig, config_to_dict(cfg.model))
    assert model == cfg.model


def test_every_field_documented() -> None:
    rows = describe_fields()
    assert rows, "no fields"
    missing = [key for key, _, doc in rows if not doc.strip()]
    assert missing == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    load_config(path)


# --------------------------------------------------------------------------------------------
# Each command reads one beta: distill.beta for `musicdistill distill`, run.* for the main job
# --------------------------------------------------------------------------------------------


def test_main_job_settings_live_in_the_run_section() -> None:
    assert {f.name for f in dataclasses.fields(DistillConfig)}.isdisjoint(
        {"diversity_beta", "compare_offline", "students"}
    )
    cfg = load_config(
        "configs/default.yaml",
        ["run.students.diversity.beta=60", "run.compare_offline=true", "run.cfg_scales=[2.0]"],
    )
    assert (cfg.run.students["diversity"]["beta"], cfg.run.compare_offline, cfg.run.cfg_scales) == (
        60,
        True,
        [2.0],
    )
    assert cfg.distill.beta == 0.0  # untouched: the main job's beta is not distill.beta


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_moved_key_in_a_yaml_file_names_file_old_and_new_key(tmp_path: Path, old: str) -> None:
    section, _, leaf = old.partition(".")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({section: {leaf: 1.0}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert str(path) in msg and f"'{old}'" in msg and f"'{MOVED_KEYS[old]}'" in msg
    assert "did you mean" not in msg


def test_moved_key_override_names_the_new_key_with_its_value() -> None:
    with pytest.raises(ConfigError, match=r"write run\.students\.diversity\.beta=60"):
        load_config(None, ["distill.diversity_beta=60"])
    with pytest.raises(ConfigError, match=r"write run\.students\.diversity\.beta=60"):
        load_config(None, ["run.diversity_beta=60"])


def test_saved_configs_from_before_the_move_still_load(tmp_path: Path) -> None:
    """Checkpoints and runs written before the run section keep loading, with the keys moved."""
    old = config_to_dict(load_config())
    del old["run"]
    old["distill"].update(diversity_beta=7.0, compare_offline=True)
    old["evaluate"].update(cfg_scales=[2.0], temperatures=[0.5])
    cfg = section_from_dict(Config, old)
    assert (cfg.run.students["diversity"]["beta"], cfg.run.compare_offline) == (7.0, True)
    assert set(cfg.run.students) == {"quality", "diversity"}  # no control before run.students
    assert (cfg.run.cfg_scales, cfg.run.temperatures) == ([2.0], [0.5])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert load_saved_config(path).run.students["diversity"]["beta"] == 7.0
    with pytest.raises(ConfigError, match=r"config key '(distill|evaluate)\.\w+' has moved to 'run\."):
        load_config(path)  # a user's file gets the error instead


def test_saved_configs_with_run_diversity_keys_get_two_students() -> None:
    old = config_to_dict(load_config())
    old["run"] = {"diversity_beta": 30.0, "diversity_distill": {"lr": 1e-4}, "compare_offline": True}
    cfg = section_from_dict(Config, old)
    assert cfg.run.students == {
        "quality": {"role": "quality", "beta": 0.0},
        "diversity": {"role": "diversity", "beta": 30.0, "distill": {"lr": 1e-4}},
    }


def test_distill_command_refuses_the_main_job_beta_naming_distill_beta() -> None:
    reads = distill_cmd.READS
    with pytest.raises(ConfigError) as exc:
        check_overrides(["distill.diversity_beta=60"], reads)
    msg = str(exc.value)
    assert "no longer in the 'distill' section" in msg and "run.students.diversity.beta" in msg
    assert "musicdistill run" in msg and "write distill.beta=..." in msg
    with pytest.raises(ConfigError, match=r"does not read run.students.*write distill.beta="):
        check_overrides(["run.students.diversity.beta=60"], reads)
    with pytest.raises(ConfigError, match="distill.mode=teacher"):
        check_overrides(["run.compare_offline=true"], reads)
    with pytest.raises(ConfigError, match="from the base checkpoint"):
        check_overrides(["model.dim=64"], reads)
    with pytest.raises(ConfigError, match=r"does not read run.merges.*musicdistill merge"):
        check_overrides(["run.merges=[]"], reads)
    check_overrides(["distill.beta=60", "model.backbone=native", "device=cpu", "generate.top_k=5"], reads)


def test_main_job_refuses_distill_beta_naming_the_students() -> None:
    reads = run_cmd.READS
    with pytest.raises(ConfigError, match=r"does not read distill.beta.*write run.students.diversity.beta=5"):
        check_overrides(["distill.beta=5"], reads)
    with pytest.raises(ConfigError, match="run.compare_offline"):
        check_overrides(["distill.mode=teacher"], reads)
    with pytest.raises(ConfigError, match="listening export"):
        check_overrides(["listening.seed=3"], reads)
    with pytest.raises(ConfigError, match=r"has moved to 'run.students.diversity.beta'.*write run.students"):
        check_overrides(["distill.diversity_beta=5"], reads)
    check_overrides(
        [
            "run.students.diversity.beta=5",
            "run.students.diversity.distill.lr=1e-4",
            "distill.steps=3",
            "pretrain.steps=2",
            "evaluate.seed=1",
        ],
        reads,
    )


def test_override_of_an_unread_section_names_what_the_command_reads() -> None:
    with pytest.raises(ConfigError) as exc:
        check_overrides(["pretrain.steps=3"], codec_cmd.FIT_READS)
    msg = str(exc.value)
    assert "`musicdistill codec fit` does not read pretrain.steps" in msg and "data.*, codec.*" in msg
    with pytest.raises(
        ConfigError, match=r"run section is read only by `musicdistill run`.*evaluate.systems"
    ):
        check_overrides(["run.cfg_scales=[2.0]"], evaluate_cmd.READS)


def test_a_shared_yaml_file_may_hold_sections_the_command_does_not_read() -> None:
    cfg = load_command_config(str(ROOT / "configs" / "tiny.yaml"), ["distill.beta=2"], distill_cmd.READS)
    assert cfg.distill.beta == 2.0 and cfg.run.students["diversity"]["beta"] == 1.0


def test_unknown_override_keeps_did_you_mean_under_a_command() -> None:
    with pytest.raises(ConfigError, match="did you mean 'distill.beta'"):
        load_command_config(None, ["distill.betta=2"], distill_cmd.READS)


def _config_parsers(parser: argparse.ArgumentParser, path: str = "musicdistill"):
    """(command path, parser) of every subcommand that takes KEY=VALUE overrides."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _config_parsers(sub, f"{path} {name}")
    if any(a.dest == "overrides" for a in parser._actions):
        yield path, parser


def test_every_command_with_overrides_declares_real_keys() -> None:
    found = dict(_config_parsers(build_parser()))
    assert {"musicdistill run", "musicdistill distill", "musicdistill codec fit"} <= set(found)
    valid = set(config_keys()) | set(config_sections()) | {"*"}
    for path, parser in found.items():
        reads = parser.get_default("config_reads")
        assert reads is not None and reads.command == path, path
        named = [*reads.keys, *reads.ignores, *(key for key, _ in reads.instead)]
        assert set(named) <= valid, (path, set(named) - valid)
        assert not any(reads.reads(key) for key, _ in reads.instead), path  # hints only for unread keys


def test_config_keys_lists_the_run_section_and_who_reads_what() -> None:
    build_parser()
    text = "\n".join(key_lines(declared_reads()))
    assert "# run: settings only the main job, musicdistill run, reads (read by: replicate, run)" in text
    beta = next(line for line in text.splitlines() if line.startswith("distill.beta "))
    assert beta.endswith("[read by: distill]")
    keys, moved = text.split("# moved keys")
    assert "distill.diversity_beta" in moved and "run.students.diversity.beta" in moved
    assert not any(line.startswith("distill.diversity_beta ") for line in keys.splitlines())


def test_cli_refuses_a_misread_override_before_any_work(tmp_path: Path, capsys) -> None:
    default = str(ROOT / "configs" / "default.yaml")
    code = main(["distill", "--config", default, f"runs_dir={tmp_path}", "distill.diversity_beta=60"])
    err = capsys.readouterr().err
    assert code == 2 and "distill.beta" in err and "run.students.diversity.beta" in err
    assert main(["run", default, f"runs_dir={tmp_path}", "distill.beta=60"]) == 2
    assert "run.students.diversity.beta=60" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    assert main(["config", "show", "--config", default, "run.students.diversity.beta=60"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["students"]["diversity"]["beta"] == 60


def test_main_job_trains_each_student_with_its_own_beta_and_distill_keys(tmp_path: Path, monkeypatch) -> None:
    calls = []

    dials = []

    def fake_stage(cfg, r, o, res, section, provenance, dial_hidden=0, dial_lr_scale=1.0):
        calls.append((section.beta, section.mode, section.lr, section.divergence, provenance.get("role")))
        dials.append((dial_hidden, dial_lr_scale))
        return {}

    monkeypatch.setattr(stages, "_distill_stage", fake_stage)
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "distill.beta=99",
            "run.students={quality: {role: quality}, div: {role: diversity, beta: 7, distill: "
            "{lr: 3e-4, divergence: jeffreys}}, ctl: {role: control}, extra: {role: student, beta: 2}}",
            "run.merges=[{a: quality, b: div, lambdas: [0.5]}]",
        ],
    )
    for stage in main_job.student_stages(cfg):
        stage.run(cfg, tmp_path, tmp_path, False)
    assert stages.stage_offline(cfg, tmp_path, tmp_path, False)["ran"] is False
    offline = load_config(None, [f"runs_dir={tmp_path}", "run.compare_offline=true"])
    stages.stage_offline(offline, tmp_path, tmp_path, False)
    lr = cfg.distill.lr
    assert calls == [
        (0.0, "on_policy", lr, "reverse_kl", "quality"),
        (7.0, "on_policy", 3e-4, "jeffreys", "diversity"),
        (0.0, "on_policy", 3e-4, "jeffreys", "control"),  # the diversity student's settings, beta 0
        (2.0, "on_policy", lr, "reverse_kl", "student"),
        (0.0, "teacher", lr, "reverse_kl", "offline"),
    ]
    assert set(dials) == {(0, 1.0)}
    conditioned = load_config(
        None, [f"runs_dir={tmp_path}", "run.conditioned=true", "run.conditioned_dial_lr_scale=10"]
    )
    [stage] = [s for s in main_job.student_stages(conditioned) if s.name == "conditioned"]
    stage.run(conditioned, tmp_path, tmp_path, False)
    assert calls[-1][4] == "conditioned" and dials[-1] == (64, 10.0)
    systems = {s["name"]: s for s in run_systems.main_job_systems(cfg, tmp_path)}
    assert systems["ctl (beta=0)"]["role"] == "control" and systems["div (beta=7)"]["role"] == "diversity"
    assert systems["merge lambda=0.5"]["merge_of"] == ["quality", "div"]
    assert systems["base CFG 3"]["role"] == "teacher" and systems["base CFG 2"]["role"] == "base"
    names = {
        s["name"]
        for s in run_systems.main_job_systems(
            load_config("configs/default.yaml", ["run.cfg_scales=[2.5]"]), tmp_path
        )
    }
    assert {
        "diversity (beta=30)",
        "control (beta=0)",
        "base CFG 2.5",
    } <= names and "base CFG 1.5" not in names


def test_main_job_reruns_only_the_stages_a_run_key_changes() -> None:
    default = "configs/default.yaml"
    by_name = {s.name: s for s in main_job.main_job_stages(load_config(default))}
    upstream = {name: "x" for name in by_name}

    def hashes(*overrides: str) -> dict[str, str]:
        cfg = load_config(default, list(overrides))
        names = ("quality", "diversity", "control", "offline", "front", "merges", "evaluate")
        return {n: stage_hash(by_name[n], cfg, upstream) for n in names}

    base = hashes()
    # the control copies the diversity student's distill keys (not its beta)
    for key, expected in (
        ("run.students.diversity.beta=3", {"diversity", "control", "evaluate"}),
        ("run.students.diversity.distill.lr=1e-3", {"diversity", "control", "evaluate"}),
        ("run.students.quality.distill={lr: 1e-3}", {"quality", "evaluate"}),
        ("run.merges=[{a: quality, b: diversity, lambdas: [0.5]}]", {"merges", "evaluate"}),
    ):
        changed = {n for n, h in hashes(key).items() if h != base[n]}
        assert changed == expected, key
    # the offline student is evaluated too when it exists
    assert {n for n, h in hashes("run.compare_offline=false").items() if h != base[n]} == {
        "offline",
        "evaluate",
    }
    assert {n for n, h in hashes("run.cfg_scales=[2.0]").items() if h != base[n]} == {"front", "evaluate"}
    assert "control" not in {
        s.name for s in main_job.main_job_stages(load_config(default, ["run.students.control=null"]))
    }


@pytest.mark.parametrize(
    ("text", "value"), [("3e-4", 3e-4), ("1E-3", 1e-3), ("+2.5e-5", 2.5e-5), ("5e-1", 0.5)]
)
def test_exponent_numbers_are_numbers_on_the_command_line_and_in_files(tmp_path: Path, text, value) -> None:
    assert load_config(None, [f"distill.lr={text}"]).distill.lr == value
    path = tmp_path / "c.yaml"
    path.write_text(f"distill:\n  lr: {text}\n", encoding="utf-8")
    assert load_config(path).distill.lr == value


@pytest.mark.parametrize("text", ["e-4", "3e", "fast", "nan"])
def test_words_are_still_not_numbers(text: str) -> None:
    with pytest.raises(ConfigError, match=r"distill\.lr: expected a number"):
        load_config(None, [f"distill.lr={text}"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            "run.students.diversity.distill.beta=3",
            r"run\.students\.diversity\.distill\.beta is set by the student's own",
        ),
        ("run.students.diversity.distill.mode=teacher", r"distill\.mode is set by the main job"),
        (
            "run.students.diversity.distill.lrr=3",
            r"run\.students\.diversity\.distill\.lrr: not a key of the distill section; did you mean 'lr'",
        ),
        (
            "run.students.diversity.distill.lr=-1",
            r"run\.students\.diversity\.distill\.lr=-1\.0 is out of range",
        ),
        (
            "run.students.diversity.distill.divergence=foo",
            r"run\.students\.diversity\.distill\.divergence='foo' is not allowed",
        ),
        ("run.students.diversity.distill=3", r"run\.students\.diversity\.distill: expected a mapping"),
        ("run.students.diversity.role=best", r"run\.students\.diversity\.role='best': choose one of"),
        ("run.students.diversity.beta=0", r"the diversity student needs beta > 0"),
        ("run.students.quality.beta=2", r"the quality student has beta 0"),
        ("run.students.control.beta=2", r"a control takes the diversity student's settings with beta 0"),
        ("run.students.control.distill={lr: 1e-3}", r"a control takes the diversity student's settings"),
        (
            "run.students.diversity=null",
            r"a control copies the diversity student's settings.*no student has role",
        ),
        ("run.students.other={role: quality}", r"quality and other both have role quality"),
        ("run.students.Bad={role: student}", r"the name 'Bad' must be lowercase"),
        ("run.students.merges={role: student}", r"'merges' is a folder of every run"),
        ("run.students.eval_x={role: student}", r"names starting with 'eval_' are the evaluation stages"),
        ("run.students.diversity.lr=1", r"run\.students\.diversity\.lr: not a student setting"),
        ("run.merges=[{a: quality, b: nobody}]", r"run\.merges\[0\]\.b='nobody' is not a declared student"),
        ("run.merges=[{a: quality, b: diversity, lambdas: [1.0]}]", r"strictly between 0 and 1"),
        ("run.merges=[{a: quality, b: quality}]", r"merge two different students"),
        (
            "run.merges=[{a: quality, b: diversity, lambdas: [0.12, 0.125]}]",
            r"run\.merges\[0\]\.lambdas=\[0\.12, 0\.125\]: two lambdas share a folder name \(lam_0\.12, lam_0\.12",
        ),
    ],
)
def test_students_and_merges_are_checked_with_the_field_and_the_fix(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("configs/default.yaml", [override])


def test_run_conditioned_adds_a_student_with_the_diversity_settings_and_a_dial() -> None:
    from musicdistill.config import student_distill_config
    from musicdistill.config.students import parse_students

    cfg = load_config("configs/default.yaml", ["run.conditioned=true"])
    student = parse_students(cfg)[-1]
    assert (student.name, student.role, student.beta, student.settings_of) == (
        "conditioned",
        "conditioned",
        30.0,
        "diversity",
    )
    section = student_distill_config(cfg, student)
    assert (student.dial_hidden, section.lr, section.divergence) == (64, 0.0001, "jeffreys")
    assert not any(s.role == "conditioned" for s in parse_students(load_config("configs/default.yaml")))
    without = [
        "run.conditioned=true",
        "run.students.diversity=null",
        "run.students.control=null",
        "run.merges=[]",
    ]
    with pytest.raises(ConfigError, match="no student has role: diversity"):
        parse_students(load_config("configs/default.yaml", without))


def test_a_students_distill_changes_only_its_own_section() -> None:
    cfg = load_config(
        "configs/default.yaml",
        [
            "distill.lr=2e-4",
            "run.students.diversity.distill.lr=1e-4",
            "run.students.diversity.distill.steps=40",
        ],
    )
    students = {s.name: s for s in parse_students(cfg)}
    section = student_distill_config(cfg, students["diversity"])
    control = student_distill_config(cfg, students["control"])
    quality = student_distill_config(cfg, students["quality"])
    assert (section.lr, section.steps, section.beta, section.divergence) == (1e-4, 40, 30.0, "jeffreys")
    assert (control.lr, control.steps, control.beta, control.divergence) == (1e-4, 40, 0.0, "jeffreys")
    assert (quality.lr, quality.steps, quality.beta, quality.divergence) == (
        2e-4,
        cfg.distill.steps,
        0.0,
        "reverse_kl",
    )
