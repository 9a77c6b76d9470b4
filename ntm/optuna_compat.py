"""Everything the project takes from Optuna and hydra-optuna-sweeper beyond their public API.

Two lines of Hydra's Optuna sweeper are supported: the stable one (hydra-optuna-sweeper 1.3,
optuna 2.10) and the 1.4 release candidates (optuna 4.9-5; `make test-next`). The rest of the
project uses only what both lines publish (`study.ask(fixed_distributions)`, `enqueue_trial`, the
storage's trial and attribute methods, `pruner.prune`); what they do not publish is here, and
tests/test_optuna_compat.py checks each of these on whichever line is installed.
"""

from importlib.metadata import version

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

# The integer distribution of `int(range(...))` sweeps: IntUniformDistribution on optuna 2.10,
# IntDistribution from optuna 3 (which keeps the old name only as a deprecated alias).
INT_DISTRIBUTIONS = tuple(
    getattr(optuna.distributions, name)
    for name in ("IntDistribution", "IntUniformDistribution")
    if hasattr(optuna.distributions, name)
)


# Hydra 1.4 instantiates a target named in a config only if the caller whitelists it.
HYDRA_WHITELISTS = not version("hydra-core").startswith("1.3")


def instantiate_optuna(config, kind: str):
    """The sampler or pruner (kind: "samplers" or "pruners") that a config names; an object passes through.

    Hydra 1.3 instantiates a sweeper's nested configs before the sweeper gets them; 1.4 hands them
    over as configs, for the plugin to instantiate with a whitelist of the targets it trusts.
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    if not isinstance(config, DictConfig | dict):
        return config
    trusted = {"_execution_whitelist_": (f"optuna.{kind}.*", "hydra_plugins.hydra_optuna_sweeper.*")}
    return instantiate(config, **(trusted if HYDRA_WHITELISTS else {}))


def split_overrides(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distribution of each swept key, {fixed key: its override line, as typed}); keys carry the
    line's +, ++ or ~ prefix, as Hydra's key elements do.

    A key given more than once counts as its last line, swept or fixed. Hydra's sweep syntax
    (`choice`, `range`, `interval`, `tag(log, ...)`) is parsed by hydra-optuna-sweeper's
    `create_params_from_overrides`, which neither line publishes; it returns (distributions,
    fixed values) on 1.3 and (distributions, fixed values, deletions) on 1.4.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    last = {override.get_key_element(): override.input_line for override in OverridesParser.create().parse_overrides(overrides)}
    distributions = create_params_from_overrides(list(last.values()))[0]
    return distributions, {key: line for key, line in last.items() if key not in distributions}


def grid_values(name: str, distribution: BaseDistribution) -> list:
    """The values a grid visits for one swept key: `choice(...)` or an integer `range(...)`."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, INT_DISTRIBUTIONS) and not getattr(distribution, "log", False):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    raise ValueError(f"hydra.sweeper.params.{name}: a grid needs choice(...) or int range(...), not {distribution}")


def running_trials_never_beaten(storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    """Ids of the study's RUNNING trials that have no heartbeat at all.

    Neither line publishes whether a trial has a heartbeat (their fail_stale_trials skips a trial
    without one), so this reads Optuna's own tables, which both lines define alike.
    """
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial = models.TrialModel
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (
            session.query(trial.trial_id)
            .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING, ~trial.heartbeats.any())
            .all()
        )
    return [trial_id for (trial_id,) in rows]
