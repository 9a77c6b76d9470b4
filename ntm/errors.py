"""Errors a user can fix, and the one place that turns them into one line and an exit code."""

import sys
from contextlib import contextmanager


class UserError(Exception):
    """A mistake in what was asked for, not a bug: reported as one line, no traceback."""

    label = "Error"
    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config key or value outside what is allowed; the message names the full key."""


class RunFolderError(UserError):
    """The run folder cannot be used as asked: another config wrote it, another process holds
    it, or its files are damaged. Nothing in it has been changed."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the run saved a checkpoint and stopped.

    Like KeyboardInterrupt, not an Exception: Hydra's launchers record a job's Exception as one
    failed job and launch the next, so Ctrl-C would stop one job of a sweep, not the sweep."""

    label = "Interrupted"
    exit_code = 130


@contextmanager
def reported(reraise: bool = False):
    """Print a UserError or Interrupted raised inside as `Label: message` on stderr and exit with
    its code.

    With reraise (a sweep's job) it propagates instead: the sweeper records a UserError as a
    failed trial and goes on, and stops at an Interrupted.
    """
    try:
        yield
    except (UserError, Interrupted) as error:
        if reraise:
            raise
        print(f"{error.label}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
