"""The command lines: help for every option, the `agestudy` command, one-line errors for bad stores."""

import argparse
import importlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agestudy.cli import COMMANDS

PASSWORD = "S3cret-pw_42"


def _parsers():
    return {name: importlib.import_module(module).build_parser() for name, (module, _) in COMMANDS.items()}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_explains_itself_and_shows_its_default(command):
    parser = _parsers()[command]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and len(action.help) > 10, f"{command} {flag} has no help text"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            # the formatter appends the default, unless the text already gives it
            shown = parser._get_formatter()._get_help_string(action)
            assert "default" in shown.lower(), f"{command} {flag}: default {action.default!r} not shown"
    assert "(default: " in text


def test_train_help_comes_from_the_config():
    from dataclasses import fields

    from agestudy.config import TrainConfig

    parser = _parsers()["train"]
    by_dest = {a.dest: a for a in parser._actions}
    for f in fields(TrainConfig):
        assert by_dest[f.name].help == f.metadata["help"]
        assert by_dest[f.name].default == f.default


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_agestudy_command_dispatches():
    script = Path(sys.executable).parent / "agestudy"
    assert script.exists(), "the agestudy console script is missing: pip install -e ."
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and all(name in out.stdout for name in COMMANDS)
    out = subprocess.run([str(script), "report", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--lang" in out.stdout
    out = subprocess.run([str(script), "fly"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.parametrize("option", ["storage", "tracking", "scheme"])
def test_bad_stores_fail_in_one_line_without_the_password(option, synthetic_root, tmp_path):
    port = _free_port()
    db = tmp_path / "mlflow.db"
    args = ["--study", "quick", "--data", str(synthetic_root), "--quiet", "--cache-dir", str(tmp_path / "cache")]
    if option == "storage":
        args += ["--tracking-uri", f"sqlite:///{db}", "--storage",
                 f"postgresql://agestudy:{PASSWORD}@127.0.0.1:{port}/optuna"]
    elif option == "tracking":
        args += ["--tracking-uri", f"http://agestudy:{PASSWORD}@127.0.0.1:{port}"]
    else:
        args += ["--tracking-uri", f"foo://agestudy:{PASSWORD}@host/x"]
    out = subprocess.run([sys.executable, "-m", "agestudy.tune", *args], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    assert "***@127.0.0.1" in lines[0] or option == "scheme"
    # nothing was trained (the stores are checked before the data) and no store holds the password
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
