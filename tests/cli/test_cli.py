"""The ``weakseg`` entry point: commands listed without importing them, each command's parser
built without torch, every user error one line with exit status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from weakseg.cli import COMMANDS, build_parser, main

# Commands whose module builds its parser without importing torch (their func imports it).
TORCH_FREE = (
    "demo",
    "bench",
    "data",
    "segment",
    "scribbles",
    "train",
    "eval",
    "predict",
    "viz",
    "proposals",
    "experiment",
)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_help_table_matches_each_command_module() -> None:
    listed = {a.dest: a.help for a in _subcommands(build_parser())._choices_actions}
    full = {a.dest: a.help for a in _subcommands(build_parser(every_command=True))._choices_actions}
    assert listed == full == COMMANDS


@pytest.mark.parametrize("command", ["", *TORCH_FREE])
def test_help_imports_neither_torch_nor_numpy(command: str) -> None:
    code = (
        "import sys\n"
        "from weakseg.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'] if {command!r} else ['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]
    assert "usage: weakseg" in result.stdout


def test_unknown_key_is_one_line_with_the_suggestion() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "weakseg", "train", "--set", "lrr=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: unknown config key 'lrr' in defaults + --set (did you mean 'lr'?)\n"
    )


def test_no_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
