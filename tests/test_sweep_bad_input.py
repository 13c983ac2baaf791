"""roberta-sweep on bad input: any spec file either loads or stops with one line before anything is
written; a command that cannot start is reported, and no results.* is written without a result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from roberta.cli import sweep
from roberta.cli.common import run_cli
from roberta.cli.sweep.spec import load_spec, parse_spec
from roberta.errors import UserError
from roberta.flag_types import MAX_SEED

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_FIELDS = ("command", "common", "tasks", "grid", "seeds", "metric", "maximize")
TASK_FIELDS = ("data", "args", "metric", "maximize")


def good_spec(data: Path) -> dict:
    return {"command": [sys.executable, "-c", "pass"], "common": ["--task", "sentence_prediction"],
            "tasks": {"RTE": {"data": str(data), "args": ["--num-classes", "2"], "metric": "accuracy"}},
            "grid": {"--lr": ["1e-5", "2e-5"]}, "seeds": [1, 2], "metric": "accuracy", "maximize": True}


def assert_one_line(error: UserError) -> None:
    assert len(str(error).splitlines()) == 1, str(error)


def loads_or_one_line_error(load) -> None:
    try:
        load()
    except UserError as error:
        assert_one_line(error)


# Any text, with NUL, line breaks of every kind and unpaired surrogates drawn often.
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
                   | st.sampled_from("\0\n\r\x0b\x1c\x85\u2028\udc80\ud800-a"), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | any_text
    | st.sampled_from(["RTE", "--lr", "1e-5", ".", "/", "accuracy", "loss", sys.executable]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text | st.sampled_from(TASK_FIELDS),
                                                                      children, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_spec_file_loads_or_is_one_line(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    loads_or_one_line_error(lambda: load_spec(path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(SPEC_FIELDS + tuple(f"task.{name}" for name in TASK_FIELDS)), value=json_values)
def test_any_value_of_any_field_loads_or_is_one_line(field: str, value: object, tmp_path: Path) -> None:
    spec = good_spec(tmp_path)
    if field.startswith("task."):
        spec["tasks"]["RTE"][field.removeprefix("task.")] = value
    else:
        spec[field] = value
    loads_or_one_line_error(lambda: parse_spec(json.loads(json.dumps(spec)), where="spec.json"))


@pytest.mark.parametrize("change, message", [
    ({"seeds": [-1]}, f'"seeds" must be a non-empty list of integers in [0, {MAX_SEED}]'),
    ({"seeds": [MAX_SEED + 1]}, '"seeds" must be'),
    ({"common": ["--x", "a\0b"]}, '"a\\u0000b" cannot be passed on a command line'),
    ({"grid": {"--lr": ["1e-5", "\udc80"]}}, '"\\udc80" cannot be passed on a command line'),
    ({"tasks": {"RTE": {"data": ".\0"}}}, 'cannot be passed on a command line'),
    ({"tasks": {"RTE\n": {"data": "."}}}, 'task "RTE\\n": a task name is its folder name'),
    ({"grid": {"--lr\n": ["1"]}}, 'grid "--lr\\n": a grid key must be a flag'),
    ({"metric": "f1\n"}, '"metric" must be a name such as "accuracy"'),
    ({"command": ["no-such-training-program"]},
     '"command" starts with "no-such-training-program", which is not an executable program'),
])
def test_a_bad_value_names_the_field(change: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        parse_spec({**good_spec(tmp_path), **change}, where="spec.json")
    assert_one_line(error.value)
    assert message in str(error.value)


def test_a_spec_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "spec.json"
    content = json.dumps(good_spec(tmp_path), ensure_ascii=False).replace("RTE", "R\u00c9TE").encode("latin-1")
    spec.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sweep.main, "roberta-sweep", [str(spec), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (f"roberta-sweep: error: {spec}: not UTF-8 text (byte "
                                       f"{content.index(0xC9)} is 0xc9); save the spec as UTF-8\n")
    assert not (tmp_path / "out").exists()


def test_a_missing_program_stops_the_sweep_before_anything_is_written(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**good_spec(tmp_path), "command": ["roberta-trian"]}), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sweep.main, "roberta-sweep", [str(spec), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f'roberta-sweep: error: {spec}: "command" starts with "roberta-trian", which is not an '
                          f'executable program') and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_program_that_cannot_start_is_reported_and_leaves_no_results(tmp_path: Path) -> None:
    program = tmp_path / "train.bin"
    program.write_bytes(b"\x7fNOT-AN-EXECUTABLE\x00\x01")
    program.chmod(0o755)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**good_spec(tmp_path), "command": [str(program)], "seeds": [1]}), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "roberta.cli.sweep", str(spec), "--output-dir", str(out)],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("roberta-sweep: error: 2 of 2 runs failed")
    assert f"RTE lr_1e-5 seed 1: FAILED (0 s): could not start {program}: Exec format error" in result.stderr
    stderr_log = out / "RTE" / "lr_1e-5" / "seed1" / "stderr.log"
    assert stderr_log.read_text() == f"roberta-sweep: could not start {program}: Exec format error\n"
    assert not list(out.glob("results.*")) and not list(out.glob("**/result.json"))
