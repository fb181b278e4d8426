"""User-facing errors: a one-line message and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import signal
import sys


class UserError(Exception):
    """A mistake in what the user gave us (paths, options, data layout)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: every ``except KeyboardInterrupt`` handles it alike.
    A subclass, not KeyboardInterrupt itself: CPython re-kills itself with SIGINT at exit once an
    exception of exactly that type has escaped an embedded evaluation, even when it was caught later
    (a SIGTERM'd `tune` once exited -2 after printing "interrupted")."""


def _raise_interrupt(signum, frame):
    raise Terminated


def cli_entry(main):
    """Wrap a CLI ``main(argv) -> int`` so user mistakes print one line and exit 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        # SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C: runs end KILLED, not left RUNNING
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
