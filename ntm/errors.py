"""Errors a user can fix, and the one place that turns them into one line and an exit code."""

import os
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


class Interrupted(UserError):
    """SIGINT or SIGTERM arrived; the run saved a checkpoint and stopped."""

    label = "Interrupted"
    exit_code = 130


@contextmanager
def reported(reraise: bool = False):
    """Print a UserError raised inside as `Label: message` on stderr and exit with its code.

    With reraise (a sweep's job) it propagates instead, so the sweeper records a failed trial
    and goes on.
    """
    try:
        yield
    except UserError as error:
        if reraise:
            raise
        print(f"{error.label}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


@contextmanager
def hydra_errors_reported():
    """Report Hydra's own config errors (unknown key, wrong type, unknown group option, bad
    override syntax) like ours: one line, exit code 2.

    Left to itself Hydra prints them over several lines, with a hint to add the key with `+`
    (which the schema then refuses), and exits with 1. HYDRA_FULL_ERROR=1 makes Hydra raise
    instead; a user who set it gets Hydra's full traceback as usual.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with reported():
        try:
            yield
        except (HydraException, OmegaConfBaseException) as error:
            if wants_traceback:
                raise
            if isinstance(error.__cause__, UserError):
                raise error.__cause__ from None  # ours, raised inside a Hydra plugin (the ensemble launcher's checks)
            raise ConfigError(one_line(error)) from None


def one_line(error: BaseException) -> str:
    """A Hydra or OmegaConf message on one line: its lines joined, option lists inline without
    the internal *_schema options, no `+key` hint, and the first line of its cause."""
    parts, listing = [], False
    for raw in str(error).splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if not line or line.startswith("To append to your config"):
            continue
        if line.startswith("Available options in"):
            parts.append(line.rstrip(":") + ":")
            listing = True
        elif listing and raw.startswith(("\t", " ")):
            if not line.endswith("_schema"):
                parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            listing = False
            parts.append(line.rstrip("."))
    if error.__cause__ is not None and str(error.__cause__).strip():
        parts.append(str(error.__cause__).strip().splitlines()[0])
    return "; ".join(parts)
