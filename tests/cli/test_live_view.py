"""`mwaactl pause` in a real terminal: the CLI runs in a child process whose stdin, stdout and stderr
are a pseudo-terminal, so rich finds a terminal by itself (nothing forces it) and draws the live
view: a spinner on a line it rewrites, the cursor hidden meanwhile, the states as the workflow enters
them, and the final line. The child starts its own local cloud (tests/cli/live_view_driver.py)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLUMNS, LINES = 120, 40
# Variables that would decide for rich instead of the terminal, or change its size.
UNSET = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "CI", "JUPYTER_COLUMNS")
HIDE_CURSOR, SHOW_CURSOR, ERASE_LINE = "\x1b[?25l", "\x1b[?25h", "\x1b[2K"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # rich's "dots"
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(arguments: list[str], log: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Runs mwaactl through the driver on a pty of COLUMNS x LINES; its exit code and all it drew."""
    terminal, child_side = os.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in UNSET} | {"TERM": "xterm-256color"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.cli.live_view_driver", str(log), *arguments],
        cwd=ROOT,
        env=environment,
        stdin=child_side,
        stdout=child_side,
        stderr=child_side,
        start_new_session=True,  # the pty is its controlling terminal, as a shell's would be
    )
    os.close(child_side)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not chunk:
                break
            drawn += chunk
        code = child.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(terminal)
    return code, drawn.decode("utf-8", errors="replace")


def test_a_failing_pause_is_drawn_live_in_a_terminal_and_exits_1(tmp_path: Path) -> None:
    # Given an environment MWAA does not know: the Pause workflow refuses it in its first step
    # When the on-call engineer pauses it in a terminal
    started = time.monotonic()
    code, drawn = run_in_terminal(["pause", "ghost", "--poll", "0.2"], tmp_path / "cloud.log")
    text = CSI.sub("", drawn).replace("\r\n", "\n")
    context = f"terminal:\n{drawn!r}\nlocal cloud log (tail):\n{(tmp_path / 'cloud.log').read_text()[-3000:]}"

    # Then rich drew a live view: the cursor hidden while a spinner line is rewritten, then shown again
    assert code == 1, context
    assert HIDE_CURSOR in drawn and SHOW_CURSOR in drawn and drawn.index(HIDE_CURSOR) < drawn.index(SHOW_CURSOR), (
        context
    )
    assert ERASE_LINE in drawn and any(frame in drawn for frame in SPINNER), context
    assert "\x1b[" in drawn.split(HIDE_CURSOR, 1)[0], "colour before the live view: a terminal, not a pipe"
    # the states the workflow entered, each on its own line
    assert "started pause of ghost" in text and "Ctrl-C stops following" in text, context
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert any(line.endswith("Check opt-in and version, take the lock, snapshot the configuration") for line in lines)
    assert any(line.endswith("Pause failed") for line in lines), context
    # and the final lines: the outcome with the execution, its cause, and where to look next
    outcome = next(i for i, line in enumerate(lines) if line.startswith("FAILED arn:aws:states:"))
    assert lines[outcome + 1 :] == [
        "cause: pause of ghost failed at prepare: PauseRefused: ghost does not exist; nothing to pause",
        "see the execution history in the Step Functions console; `mwaactl status` shows the phase now",
    ], context
    assert "Exception=" not in text and '"level"' not in text, "the local cloud's own output reached the terminal"
    assert time.monotonic() - started < 60
