"""The docs site's generated pages: the CLI reference covers every command with its real help.

The hook (docs/hooks/cli_reference.py) needs only heatlab and Typer, so it is tested without MkDocs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer.main

from heatlab.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs/hooks/cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(command, path):
    yield path, command
    if hasattr(command, "list_commands"):
        for name in command.list_commands(None):
            yield from _commands(command.get_command(None, name), path + [name])


def test_cli_reference_has_every_command_with_every_option():
    text = _hook().cli_reference()
    sections = text.split("\n## ")
    found = {}
    for section in sections:
        title = section.split("`")[1]
        found[title] = section
    commands = list(_commands(typer.main.get_command(app), ["heatlab"]))
    assert len(commands) > 10
    for path, command in commands:
        section = found[" ".join(path)]  # every command has its section
        assert f"Usage: {' '.join(path)}" in section
        for param in command.params:
            for flag in param.opts if param.param_type_name == "option" else []:
                assert flag in section, (path, flag)
    assert "╭" not in text and "\x1b[" not in text  # plain help: no Rich boxes, no colour codes


def test_cli_reference_replaces_only_its_marker():
    hook = _hook()
    assert hook.on_page_markdown("# A page\n", None, None, None) == "# A page\n"
    page = hook.on_page_markdown(f"# CLI\n\n{hook.MARKER}\n", None, None, None)
    assert hook.MARKER not in page and "## `heatlab evaluate`" in page


def test_square_brackets_in_help_survive_rich_and_the_reference():
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).output
    assert "pip install 'heatlab[ray]'" in out  # Rich read an unescaped [ray] as a style tag and dropped it
    assert "pip install 'heatlab[ray]'" in _hook().cli_reference()
