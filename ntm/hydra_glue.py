"""Everything that ties ntm to Hydra, in one place; the rest of ntm works without Hydra.

- register_configs(): the schemas of ntm.config in Hydra's ConfigStore (conf/ extends them).
- Resolvers for conf/, registered on import (sweep jobs resolve their folders in launcher
  worker processes too): job_dirname, unnamed_keys, for_task, steps_for.
- without_hydra(config): what a task function receives; hydra_record(): Hydra's record of a job
  for its run folder's .hydra/.
- CheckBeforeWriting, the callback that refuses a bad config before Hydra writes anything
  (conf/config.yaml, hydra.callbacks).
- hydra_errors_reported(): Hydra's and OmegaConf's config errors as one line, exit code 2.
"""

import copy
import hashlib
import os
from contextlib import contextmanager
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ntm.checks import require
from ntm.config import GROUP_SCHEMAS, Config, validate
from ntm.errors import ConfigError, Interrupted, UserError, reported
from ntm.run_format import NON_RESULT_KEYS


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; each YAML in conf/ extends one of them."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, registry in GROUP_SCHEMAS.items():
        for name, schema in registry.items():
            cs.store(group=group, name=f"{name}_schema", node=schema)


# Resolvers.


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides (Hydra's override_dirname): readable, the
    same for the same parameters (so a continued sweep finds finished jobs), and short enough
    for any file system."""
    if len(overrides) <= 120:
        return overrides
    return f"{overrides[:100]}-{hashlib.sha1(overrides.encode()).hexdigest()[:12]}"


def unnamed_keys() -> list[str]:
    """The override keys a sweep job's folder name leaves out (conf/sweep/_base.yaml): the sweep
    choice itself and the keys that change no number (NON_RESULT_KEYS), so a rerun with, say, a
    logger on or other threads continues the same folders."""
    return ["sweep", *NON_RESULT_KEYS]


def for_task(task: str, values: dict) -> Any:
    """The value for the composed task from a table in a config file, e.g.
    `model.num_heads: "${for_task:${task.name},{copy: 1, associative_recall: 4}}"`: per-task settings in
    one sweep over tasks (conf/model/ntm_per_task.yaml, conf/sweep/paper.yaml)."""
    if task not in values:
        raise ConfigError(f"for_task: no value for task {task!r}; the table has {', '.join(values)}")
    return values[task]


def steps_for(sequences: int, batch_size: int) -> int:
    """Optimiser steps that show a run `sequences` sequences at its batch size: a sweep's budget
    in sequences, fair to every batch size it tries, e.g.
    `train.steps: ${steps_for:32768,${train.batch_size}}` (conf/sweep/_search.yaml)."""
    require(int(sequences) > 0 and int(batch_size) > 0, "steps_for", f"{sequences},{batch_size}", "sequences and batch size > 0")
    return -(-int(sequences) // int(batch_size))


for _resolver in (job_dirname, unnamed_keys, for_task, steps_for):
    OmegaConf.register_new_resolver(_resolver.__name__, _resolver, replace=True)


# A job's config and record.


def without_hydra(config: DictConfig) -> DictConfig:
    """The job's config without its hydra node: what a task function receives."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def hydra_record(hydra_config) -> dict[str, str]:
    """Hydra's record of one job (its HydraConfig node): the hydra_files that
    ntm.run_folder.write_record puts into .hydra/ beside the config, as Hydra itself would
    (hydra.output_subdir is null)."""
    return {
        "overrides.yaml": OmegaConf.to_yaml(hydra_config.overrides.task),
        "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_config}),
    }


# Callbacks.


def check_before_writing(config: DictConfig) -> None:
    """Validate the task config (everything but hydra.*) and the one Hydra setting run.py relies on."""
    validate(without_hydra(config))
    if config.hydra.output_subdir is not None:
        raise ConfigError(
            f"hydra.output_subdir={config.hydra.output_subdir!r} is not allowed: must be null "
            "(run.py writes .hydra/ itself, once the run folder's checks pass)"
        )


def check_sweep_params(config: DictConfig) -> None:
    """Refuse a swept key that the composed config does not have, e.g. sweep=hpo's
    model.memory.init with model=lstm: else every job of the sweep fails on its own."""
    choices = config.hydra.runtime.choices
    missing = object()
    for key in OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}:
        name = key.lstrip("+~")
        if name not in choices and OmegaConf.select(config, name, default=missing) is missing:
            chosen = ", ".join(f"{group}={choices[group]}" for group in ("task", "model") if group in choices)
            raise ConfigError(f"hydra.sweeper.params.{key} is not allowed: {name} is not a key of the composed config ({chosen})")


# Presets removed in 0.6.0 (deprecated since 0.3.0): name -> what to use instead, for the one-line
# refusal that replaces Hydra's "Could not find 'preset/NAME'".
REMOVED_PRESETS = {
    "seed": "preset=pytorch_ntm, the same settings ('seed' reads as the random seed)",
    "repeat_copy_fast": "preset=repeat_copy, which solves seeds 1-4 at batch 1 in fewer sequences than the defaults",
}


def removed_preset(error: BaseException) -> str | None:
    """The refusal for a removed preset, if Hydra's error is that it found no such preset."""
    for name, instead in REMOVED_PRESETS.items():
        if f"Could not find 'preset/{name}'" in str(error):
            return f"preset={name} was removed in 0.6.0: use {instead}"
    return None


class CheckBeforeWriting(Callback):
    """Refuse a bad config with one line before Hydra creates any folder.

    Each sweep job's own parameters are checked again by run.py when the job starts.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with reported():
            check_before_writing(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with reported():
            check_before_writing(config)
            check_sweep_params(config)


# Errors.


@contextmanager
def hydra_errors_reported():
    """Report Hydra's own config errors (unknown key, wrong type, unknown group option, bad
    override syntax) like ours: one line, exit code 2.

    Left to itself Hydra prints them over several lines, with a hint to add the key with `+`
    (which the schema then refuses), and exits with 1. HYDRA_FULL_ERROR=1 makes Hydra raise
    instead; a user who set it gets Hydra's full traceback as usual. A Ctrl-C that reaches the
    sweep's own process as KeyboardInterrupt is reported as Interrupted: one line, exit code 130.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with reported():
            try:
                yield
            except (HydraException, OmegaConfBaseException) as error:
                if before == "1":
                    raise
                if isinstance(error.__cause__, UserError):
                    raise error.__cause__ from None  # ours, raised inside a Hydra plugin (the ensemble launcher's checks)
                raise ConfigError(removed_preset(error) or one_line(error)) from None
            except KeyboardInterrupt:
                # The sweep's own process, while a pool's workers train (they save their checkpoints).
                raise Interrupted(
                    "Stopped by SIGINT; every run keeps its last checkpoint. Run the same command again to resume."
                ) from None
    finally:
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


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
