from pathlib import Path

import pytest
import yaml

from vlmbench.errors import SpecError
from vlmbench.tasks.spec import load_spec


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


BASE = {"task": "t", "version": 1, "dataset": {"path": "data.csv", "image_root": "images"}}


def test_minimal_spec_defaults_and_relative_paths(tmp_path):
    spec = load_spec(_write(tmp_path, BASE))
    assert spec.dataset.format == "csv"
    assert spec.dataset.path == str(tmp_path / "data.csv")
    assert spec.dataset.image_root == str(tmp_path / "images")
    assert spec.dataset.columns.question == "question"  # the seed study's columns need no mapping
    assert spec.request_type == "generate"
    assert [m.name for m in spec.metrics] == ["exact_match", "average_mark"]
    assert spec.difficulty_weights == {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0, 5: 20.0}
    assert spec.version == "1"


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = _write(tmp_path, {**BASE, "dataset": {**BASE["dataset"], "imag_root": "x"}})
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    msg = str(exc.value)
    assert str(path) in msg and "dataset.imag_root" in msg and "did you mean 'image_root'" in msg


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(SpecError, match=r"generation.max_new_tokens: expected an integer, got 'ten'"):
        load_spec(_write(tmp_path, {**BASE, "generation": {"max_new_tokens": "ten"}}))
    with pytest.raises(SpecError, match=r"generation.do_sample: expected true or false"):
        load_spec(_write(tmp_path, {**BASE, "generation": {"do_sample": 1}}))


def test_literal_and_missing_required(tmp_path):
    with pytest.raises(
        SpecError, match=r"request_type: must be one of 'generate', 'rank', got 'rnak'; did you mean 'rank'"
    ):
        load_spec(_write(tmp_path, {**BASE, "request_type": "rnak"}))
    with pytest.raises(SpecError, match=r"version: required key is missing"):
        load_spec(_write(tmp_path, {"task": "t", "dataset": {"path": "x.csv"}}))


def test_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_DATA", str(tmp_path / "elsewhere"))
    spec = load_spec(
        _write(tmp_path, {**BASE, "dataset": {"path": "${MY_DATA}/d.csv", "image_root": "${NOPE:-imgs}"}})
    )
    assert spec.dataset.path == str(tmp_path / "elsewhere" / "d.csv")
    assert spec.dataset.image_root == str(tmp_path / "imgs")
    monkeypatch.delenv("MY_DATA")
    with pytest.raises(SpecError, match=r"dataset.path: environment variable MY_DATA is not set"):
        load_spec(_write(tmp_path, {**BASE, "dataset": {"path": "${MY_DATA}/d.csv"}}))


def test_prompt_templates(tmp_path):
    spec = load_spec(
        _write(
            tmp_path, {**BASE, "prompt": {"default": "{question}", "blip2": "Question: {question} Answer:"}}
        )
    )
    assert spec.prompt_template("blip2") == "Question: {question} Answer:"
    assert spec.prompt_template("qwen", model_default="Q: {question}") == "Q: {question}"
    assert spec.prompt_template("qwen") == "{question}"
    with pytest.raises(SpecError, match=r"unknown field \{answer\}"):
        load_spec(_write(tmp_path, {**BASE, "prompt": {"default": "{question} {answer}"}}))
    with pytest.raises(SpecError, match="a 'default' template is required"):
        load_spec(_write(tmp_path, {**BASE, "prompt": {"blip2": "{question}"}}))


def test_filters_metrics_candidates(tmp_path):
    with pytest.raises(SpecError, match=r"unknown filter 'first_wrd'; did you mean 'first_word'"):
        load_spec(_write(tmp_path, {**BASE, "filters": ["first_wrd"]}))
    spec = load_spec(
        _write(
            tmp_path,
            {
                **BASE,
                "metrics": [
                    "exact_match",
                    {"name": "average_mark", "options": {"correctness": "exact_match"}},
                ],
            },
        )
    )
    assert spec.metrics[1].options == {"correctness": "exact_match"}
    spec = load_spec(_write(tmp_path, {**BASE, "request_type": "rank"}))
    assert spec.candidates is not None and spec.candidates.source == "task_answers"  # no train split
    with pytest.raises(SpecError, match="needs candidates.path"):
        load_spec(_write(tmp_path, {**BASE, "candidates": {"source": "file"}}))


def test_invalid_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(_write(tmp_path, "task: [unclosed"))
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_bundled_task_files_validate():
    from vlmbench.evaluation.run_spec import load_run_file
    from vlmbench.plugin.loading import load_plugins

    root = Path(__file__).resolve().parent.parent / "tasks"
    for path in root.glob("*.yaml"):
        load_spec(path)
    tasks = {e.name for e in load_plugins().tasks}
    for path in (root / "configs").glob("*.yaml"):
        run = load_run_file(path)
        assert set(run.tasks) <= tasks and run.model_choices()


def test_include_merges_mappings_and_replaces_the_rest(tmp_path):
    base = {
        **BASE,
        "prompt": {"default": "{question}", "blip2": "Q: {question} A:"},
        "metrics": ["exact_match", "average_mark"],
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "rank.yaml").write_text(
        yaml.safe_dump(
            {
                "include": "base.yaml",
                "task": "t_rank",
                "request_type": "rank",
                "prompt": {"blip2": "{question}?"},
                "metrics": ["exact_match"],
            }
        )
    )
    spec = load_spec(tmp_path / "rank.yaml")
    assert (spec.task, spec.request_type, spec.version) == ("t_rank", "rank", "1")
    assert spec.prompt == {"default": "{question}", "blip2": "{question}?"}
    assert [m.name for m in spec.metrics] == ["exact_match"]
    assert spec.dataset.path == str(tmp_path / "data.csv")
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\ntask: x\n")
    with pytest.raises(SpecError, match="includes itself"):
        load_spec(tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("include: missing.yaml\ntask: x\n")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "bad.yaml")
