"""`mwaactl ... --help` of every command and subcommand, rendered as a terminal of 80 columns and as
a wide one shows it: nothing beyond the width, nothing cut, every option named whole.

typer lays options out in a table whose name and help columns share the width: a long option name,
or a word longer than the help column, is cut with an ellipsis. And it keeps a help text's own line
breaks (in a command's description, and in the summary the commands list shows), so a help line
longer than the terminal wraps raggedly."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mwaactl.main import app

runner = CliRunner()
WIDTHS = (80, 120, 200)
HELP_LINE = 76
"""The longest line of a command's help text that an 80-column terminal shows as written."""


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
IDS = [" ".join(("mwaactl", *path)) for path, _ in COMMANDS]


def _help(path: tuple[str, ...], width: int) -> str:
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert shown.exit_code == 0, shown.output
    return shown.stdout


def _named(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_fits_the_terminal_and_cuts_nothing(path: tuple[str, ...], command: Any, width: int) -> None:
    # Given the help of a command, as a terminal of `width` columns shows it
    text = _help(path, width)

    # Then no line is wider than the terminal, and nothing was cut (rich marks a cut with "…")
    assert [line for line in text.splitlines() if len(line) > width] == []
    assert "…" not in text
    # And every option is named whole (a hidden one in the command's description)
    names = [name for param in command.params for name in (*param.opts, *param.secondary_opts) if name[0] == "-"]
    assert [name for name in names if not _named(name, text)] == []
    # And every word of the help texts is shown whole: the description, each option's, each subcommand's summary
    texts = [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
    texts += [
        inspect.cleandoc(sub.help or "").split("\n\n")[0] for sub in (getattr(command, "commands", None) or {}).values()
    ]
    assert sorted({word for help_text in texts for word in help_text.split() if word not in text}) == []


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_texts_break_their_lines_where_a_narrow_terminal_can_show_them(
    path: tuple[str, ...], command: Any
) -> None:
    # Given a command's help text as typer reads it (its line breaks are kept)
    paragraphs = inspect.cleandoc(command.help or "").split("\n\n")

    # Then its summary, which the commands list shows, is one line (wrapped to the terminal's width)
    assert "\n" not in paragraphs[0]
    # And the lines of the rest fit an 80-column terminal as written
    assert [line for para in paragraphs[1:] for line in para.splitlines() if len(line) > HELP_LINE] == []


def test_the_restore_flag_left_out_of_the_options_table_is_described_in_its_text() -> None:
    # --accept-unverifiable-fernet-key is described in `metadata restore`'s text, not its table
    restore = dict(COMMANDS)[("metadata", "restore")]
    [flag] = [param for param in restore.params if "--accept-unverifiable-fernet-key" in param.opts]
    assert flag.hidden and "--accept-unverifiable-fernet-key:" in (restore.help or "")
