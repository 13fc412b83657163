"""Progress of a long loop on stderr: a bar redrawn in place on a terminal, and in a
log (a file, a pipe, CI) a plain line every tenth of the way, so that a log holds a
dozen lines instead of a redraw per step."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30  # characters of the bar
LOG_STEPS = 10  # lines per loop in a log: one each 10 %


def show_progress(
    done: int, total: int, text: str, *, stream: TextIO | None = None
) -> None:
    """Report that ``done`` of ``total`` steps are done; ``text`` says what runs."""
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        filled = WIDTH * done // total
        end = "\n" if done == total else ""
        bar = "#" * filled + "." * (WIDTH - filled)
        stream.write(f"\r[{bar}] {done}/{total} {text}{end}")
    elif done == total or LOG_STEPS * done // total > LOG_STEPS * (done - 1) // total:
        stream.write(f"[{done}/{total}] {100 * done // total:3d} % {text}\n")
    stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
