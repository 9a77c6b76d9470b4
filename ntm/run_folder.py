"""Opening a run folder to train in: one process at a time, only for the config that wrote it,
and from the newest checkpoint that loads. The folder's format is ntm.run_format.

The decision, made before anything in the folder is rewritten:
- another config wrote the folder (any result-changing key differs): refused;
- a final run (converged and stopped, diverged, pruned): its summary is returned;
- a run that stopped at its step budget: returned when train.steps is the same, continued from
  its last checkpoint when train.steps is larger;
- an unfinished run: resumed from its newest checkpoint that loads;
- otherwise a fresh run.
"""

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ntm import run_format as fmt
from ntm.config import Config, schema_defaults, to_container
from ntm.errors import RunFolderError
from ntm.files import save_torch, write_json, write_text, write_yaml

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("config", "model", "optimizer", "step", "sequences", "rows")


@dataclass
class Plan:
    """What to do in a run folder: return `finished`, or train from `checkpoint` (None: from scratch)."""

    finished: dict | None = None
    checkpoint: dict | None = None
    checkpoint_name: str | None = None
    continued_from: int | None = None  # steps of the finished run that this one continues


@contextmanager
def locked(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold run_dir's lock while training in it.

    The lock is an flock on run_dir/.lock: the kernel drops it when the process ends, however
    it ends, so a killed run never leaves a stale lock. When another process holds it, refuse
    (a single run) or wait for it to finish (a sweep's job, whose result it then returns).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / fmt.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            # Analysis takes the lock shared for an instant to see whether a run is live: retry briefly.
            for attempt in range(10):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 9:
                        raise
                    time.sleep(0.05)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise RunFolderError(
                    f"{run_dir} is in use by {holder}; wait for it to finish or choose another folder (hydra.run.dir=...)"
                ) from None
            log.info("Waiting for %s, which holds %s.", holder, run_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def plan(config: Config, run_dir: Path) -> Plan:
    """Decide what training in run_dir means for this config; raise RunFolderError when it cannot."""
    current = to_container(config)
    stored = read_stored_config(run_dir)
    if stored is not None:
        refuse_differences(stored, current, run_dir / fmt.CONFIG_FILE)

    summary_path = run_dir / fmt.SUMMARY_FILE
    summary, damaged = None, None
    try:
        summary = fmt.read_summary(run_dir)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, ValueError) as error:
        damaged = str(error)
        log.warning("%s is damaged (%s); resuming from a checkpoint instead.", summary_path, damaged)

    steps = config.train.steps
    if summary is not None:
        done = summary["steps"]
        if fmt.is_final(summary):
            log.info("Run in %s already finished (%s, final); returning its stored result.", run_dir, summary["status"])
            return Plan(finished=summary)
        if steps == done:
            log.info("Run in %s already finished (%s); returning its stored result.", run_dir, summary["status"])
            return Plan(finished=summary)
        if steps < done:
            raise RunFolderError(
                f"{run_dir} holds a run that finished after {done} steps; train.steps={steps} cannot shorten it "
                f"(train.steps={done} returns it, a larger value continues it)"
            )

    checkpoint, name = load_newest_checkpoint(run_dir)
    if checkpoint is not None:
        refuse_differences(checkpoint["config"], current, run_dir / fmt.CHECKPOINT_DIR / name)
        if checkpoint["step"] > steps:
            raise RunFolderError(
                f"{run_dir / fmt.CHECKPOINT_DIR / name} is at step {checkpoint['step']}, past train.steps={steps}"
            )
    if summary is not None:
        if checkpoint is None or checkpoint["step"] != summary["steps"]:
            raise RunFolderError(
                f"cannot continue the run in {run_dir} to train.steps={steps}: it has no checkpoint of its last step "
                f"{summary['steps']} (it ran with train.checkpoint_interval=0?)"
            )
        log.info("Continuing the finished run in %s from step %d to %d.", run_dir, summary["steps"], steps)
        return Plan(checkpoint=checkpoint, checkpoint_name=name, continued_from=summary["steps"])
    if damaged is not None and checkpoint is None:
        raise RunFolderError(
            f"{summary_path} is damaged ({damaged}) and no checkpoint is there to resume from; delete it to train again"
        )
    return Plan(checkpoint=checkpoint, checkpoint_name=name)


def read_stored_config(run_dir: Path) -> dict | None:
    path = run_dir / fmt.CONFIG_FILE
    if not path.exists():
        return None
    try:
        stored = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RunFolderError(f"{path} is damaged ({str(error).splitlines()[0]}); use another run folder") from None
    if not isinstance(stored, dict):
        raise RunFolderError(f"{path} is damaged (not a mapping); use another run folder")
    return stored


def refuse_differences(stored: dict, current: dict, source: Path) -> None:
    diffs = fmt.config_differences(stored, current, fmt.flatten(schema_defaults(stored)), ignore=fmt.EXTENDABLE_KEYS)
    if diffs:
        raise RunFolderError(
            f"{source} was written by a different config ({'; '.join(diffs)}); "
            "use another run folder (hydra.run.dir=...) or delete this one"
        )


def load_newest_checkpoint(run_dir: Path) -> tuple[dict | None, str | None]:
    """The newest checkpoint in run_dir that loads, and its file name; (None, None) when there is none.

    A damaged checkpoint (cut short by a full disk, overwritten, not a checkpoint) is skipped
    with a warning; RunFolderError names every file when none of them loads.
    """
    problems = []
    for name in fmt.CHECKPOINT_FILES:
        path = run_dir / fmt.CHECKPOINT_DIR / name
        if not path.exists():
            continue
        try:
            checkpoint = torch.load(path, weights_only=False, map_location="cpu")
            missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
        except Exception as error:  # torch.load raises many kinds on a damaged file
            problems.append(f"{path} ({str(error).splitlines()[0] if str(error) else type(error).__name__})")
            continue
        if problems:
            log.warning("Resuming from %s: %s does not load.", path, "; ".join(problems))
        return checkpoint, name
    if problems:
        raise RunFolderError(f"no checkpoint loads: {'; '.join(problems)}; delete them to train from the start")
    return None, None


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write checkpoints/last.pt atomically, keeping the one before as previous.pt."""
    last, previous = (run_dir / fmt.CHECKPOINT_DIR / name for name in fmt.CHECKPOINT_FILES)
    save_torch(last, state, keep_previous=previous)


def write_record(run_dir: Path, config: Config, hydra_files: dict | None) -> None:
    """Write .hydra/ (config, and Hydra's overrides and own config when given) and add this
    start to provenance.json: called once the folder's checks have passed."""
    write_yaml(run_dir / fmt.CONFIG_FILE, to_container(config))
    for name, text in (hydra_files or {}).items():
        write_text(run_dir / fmt.CONFIG_DIR / name, text)
    path = run_dir / fmt.PROVENANCE_FILE
    try:
        starts = json.loads(path.read_text())["starts"]
    except (OSError, ValueError, KeyError, TypeError):
        starts = []
    write_json(path, {"format_version": fmt.FORMAT_VERSION, "starts": [*starts, fmt.provenance()]})
