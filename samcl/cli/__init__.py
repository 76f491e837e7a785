"""The `samcl` command: learn domains into a module set, inspect it, segment images, evaluate.

Unix manners: usage errors and bad input are one line on stderr with exit code 2 (`--debug` shows the
traceback); a closed stdout (`samcl info S | head -1`) ends the command quietly like any Unix tool; Ctrl-C
prints its message on a line of its own; output that the terminal's encoding cannot show is escaped, not fatal.
"""

from __future__ import annotations

import os
import sys
import warnings

from .parser import build_parser, command_of

#: exit status of a command whose stdout was closed early (as a Unix tool killed by SIGPIPE: 128 + 13)
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    _escape_unencodable_output()
    try:
        args = build_parser(command_of(argv)).parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed: its exit code
        return stop.code if isinstance(stop.code, int) else 2
    from .. import SamclError
    from ..io import log_to_stderr
    from .commands import COMMANDS
    from .errors import error_line

    log_to_stderr()  # progress as plain lines when stderr is not a terminal (a bar when it is)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except (SamclError, ValueError, OSError) as exc:  # bad input or files: one line, exit 2 (--debug: traceback)
        if args.debug:
            raise
        print(f"samcl: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_line()
        print("samcl: interrupted; the store is unchanged unless a step finished", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one 'samcl: warning: ...' line (not Python's 'file:line: UserWarning:' and source line)."""
    from .errors import in_flags

    print(f"samcl: warning: {in_flags(str(message), None)}", file=sys.stderr if file is None else file)


def _escape_unencodable_output() -> None:
    """PYTHONIOENCODING=ascii or a C locale: write a non-ASCII name as an escape instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _discard_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so Python's final flush does not complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
        pass


def _end_progress_line() -> None:
    """Close open progress bars and leave the cursor at the start of a fresh line for the next message."""
    tqdm_module = sys.modules.get("tqdm.std")
    bars = list(getattr(tqdm_module.tqdm, "_instances", ())) if tqdm_module else []
    for bar in bars:
        try:
            bar.close()
        except Exception:  # a bar half torn down by the interrupt: the newline below still separates
            pass
    if bars or sys.stderr.isatty():  # a bar's line, or the terminal's '^C' echo, has no newline yet
        sys.stderr.write("\n")
    sys.stderr.flush()


__all__ = ["main", "build_parser"]
