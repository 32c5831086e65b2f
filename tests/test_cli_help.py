"""A command line that helps: every command's ``--help`` says what it does and names the settings it
reads; the table behind those names keeps up with ``Settings``."""

from __future__ import annotations

import fnmatch
import subprocess
import sys

import pytest

from bridge.cli import main
from bridge.cli.settings_help import COMMAND_SETTINGS
from config.settings import Settings

FIELDS = [name.upper() for name in Settings.model_fields]
COMMANDS = [[name] for name in COMMAND_SETTINGS if name != "events"] + [["events", "list"], ["events", "show"]]


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    """The description (the paragraph after the usage) and the whole text, with argparse's wrapping undone."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    paragraphs = [" ".join(part.split()) for part in capsys.readouterr().out.split("\n\n")]
    return paragraphs[1], " ".join(paragraphs)


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_each_commands_help_says_what_it_does_and_what_it_reads(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    description, text = _help(capsys, *argv)
    assert not description.startswith(("options:", "positional arguments:")) and len(description) > 40, description
    names = COMMAND_SETTINGS[argv[0]]
    assert "settings: " in text
    for name in names:
        assert f"MAGBRIDGE_{name}" in text, name
    if not names:
        assert "settings: none" in text


def test_every_name_in_the_table_is_a_setting_and_every_setting_is_named() -> None:
    for command, names in COMMAND_SETTINGS.items():
        for name in names:
            assert fnmatch.filter(FIELDS, name), f"{command}: {name} matches no setting"
    named = {field for names in COMMAND_SETTINGS.values() for name in names for field in fnmatch.filter(FIELDS, name)}
    assert named == set(FIELDS), f"name these in bridge/cli/settings_help.py: {sorted(set(FIELDS) - named)}"
    assert set(COMMAND_SETTINGS["run"]) == set(COMMAND_SETTINGS["web"]) | set(COMMAND_SETTINGS["worker"])


def test_the_command_list_shows_the_shell_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "events" in text and "dead-letters" in text and "--version" in text


@pytest.mark.slow
def test_help_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "web", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS" in result.stdout
