"""RunConfig: flags > LLM_* environment > run file > defaults; --help lists every flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm.config import RunConfig, load_run_config
from llm.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("LLM_"):
            monkeypatch.delenv(var)


def test_defaults() -> None:
    cfg = load_run_config([])
    assert (cfg.model, cfg.max_steps, cfg.seed, cfg.dist_timeout, cfg.resume) == (
        "auto",
        5000,
        1337,
        300.0,
        None,
    )


def test_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text('max_steps = 11\neval_every = 7\nlog_every = 3\nmodel = "gpt2-small"\n')
    monkeypatch.setenv("LLM_MAX_STEPS", "22")
    monkeypatch.setenv("LLM_EVAL_EVERY", "8")
    cfg = load_run_config(["--config", str(run_file), "--max-steps", "33"])
    assert cfg.max_steps == 33  # flag
    assert cfg.eval_every == 8  # environment over file
    assert cfg.log_every == 3  # file over default
    assert cfg.model == "gpt2-small"
    assert cfg.save_every == 1000  # default


def test_json_run_file_and_deepspeed_synonyms(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    run_file.write_text('{"seed": 5, "pos_encoding": "rope"}')
    cfg = load_run_config(["--config", str(run_file), "--deepspeed_config", "x.json", "--local_rank=1"])
    assert (cfg.seed, cfg.pos_encoding, cfg.deepspeed) == (5, "rope", Path("x.json"))
    assert load_run_config(["--deepspeed", "y.json"]).deepspeed == Path("y.json")


def test_model_section_applies_overrides_and_auto() -> None:
    cfg = load_run_config(["--model", "gpt2-small", "--n-layer", "3", "--pos-encoding", "rope"])
    model = cfg.model_section(cuda_available=False)
    assert (model.n_layer, model.n_embd, model.pos_encoding) == (3, 768, "rope")
    auto = load_run_config([])
    assert auto.model_section(cuda_available=False).n_layer == 2  # tiny
    assert auto.model_section(cuda_available=True).n_embd == 2048  # 3090


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--model", "gpt3"], {}, "--model gpt3: no such preset"),
        (["--max-steps", "ten"], {}, "--max-steps: "),
        ([], {"LLM_MAX_STEPS": "-1"}, "LLM_MAX_STEPS: "),
        ([], {"LLM_MAX_STPES": "3"}, "did you mean LLM_MAX_STEPS?"),
        (["--n-embd", "100", "--n-head", "3"], {}, "must be a multiple of n_head"),
    ],
)
def test_bad_settings_are_one_line_errors(argv, env, expected, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError) as caught:
        load_run_config(argv).model_section(cuda_available=False)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_run_file_with_unknown_setting(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text("max_step = 3\n")
    with pytest.raises(UsageError, match='unknown setting "max_step"; did you mean "max_steps"'):
        load_run_config(["--config", str(run_file)])


def test_help_lists_every_flag_with_its_default() -> None:
    done = subprocess.run(
        [sys.executable, "launch/train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for name, field in RunConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in text
        assert f"LLM_{name.upper()}" in text
        if field.default is not None:
            assert f"default: {field.default}" in text, name
    assert "--deepspeed_config" in text and "--config RUN_FILE" in text


def test_each_setting_is_defined_once_by_the_section_that_owns_it() -> None:
    """RunConfig only unites the sections: every flag comes from exactly one section, and the model
    overrides carry GPTConfig's own bounds (block_size >= 1 there, and so here)."""
    from llm.config import MODEL_OVERRIDES, SECTIONS
    from llm.model.config import GPTConfig

    owners = [name for section in SECTIONS for name in section.model_fields]
    assert sorted(owners) == sorted(RunConfig.model_fields)  # nothing defined twice or outside a section
    for name in MODEL_OVERRIDES:
        assert RunConfig.model_fields[name].metadata == GPTConfig.model_fields[name].metadata, name
    with pytest.raises(UsageError, match="--block-size"):
        load_run_config(["--block-size", "0"])
    assert load_run_config(["--block-size", "4"]).model_section(cuda_available=False).block_size == 4
