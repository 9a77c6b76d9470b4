"""What ntm/optuna_compat.py relies on in Optuna and hydra-optuna-sweeper, on the installed line
(the stable one under `make test`, the 1.4 release candidates under `make test-next`)."""

from importlib.metadata import version

import optuna
import pytest

from ntm.optuna_compat import grid_values, running_trials_never_beaten, split_overrides

SWEEPER_1_3 = version("hydra-optuna-sweeper").startswith("1.3")


def test_overrides_split_into_swept_and_fixed_keys_the_last_line_of_a_key_winning():
    distributions, fixed = split_overrides(
        ["seed=choice(1,2)", "train.steps=5", "+model.extra=1", "optimizer.lr=choice(1e-3,1e-4)", "optimizer.lr=3e-4",
         "train.steps=choice(5,6)", "~train.device"]
    )  # fmt: skip
    assert sorted(distributions) == ["seed", "train.steps"]
    assert list(distributions["train.steps"].choices) == [5, 6]
    assert fixed == {"+model.extra": "+model.extra=1", "optimizer.lr": "optimizer.lr=3e-4", "~train.device": "~train.device"}
    assert list(fixed) == ["+model.extra", "optimizer.lr", "~train.device"], "in command-line order"


def test_a_grid_visits_choices_and_integer_ranges_and_refuses_intervals():
    distributions, _ = split_overrides(["a=choice(x,y)", "b=range(1,3)", "c=interval(0.1,0.2)"])
    assert grid_values("a", distributions["a"]) == ["x", "y"]
    # Hydra's 1.4 sweeper reads range(a,b) as Python does; 1.3's included b (README, Sweeps).
    assert grid_values("b", distributions["b"]) == ([1, 2, 3] if SWEEPER_1_3 else [1, 2])
    with pytest.raises(ValueError, match=r"hydra.sweeper.params.c: a grid needs choice"):
        grid_values("c", distributions["c"])


def test_running_trials_without_a_heartbeat_are_found_and_no_others(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="s")
    study_id = storage.get_study_id_from_name("s")
    beaten, silent, finished = (study.ask() for _ in range(3))
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in (beaten, silent, finished)]
    storage.record_heartbeat(ids[0])
    study.tell(finished, 1.0)
    assert running_trials_never_beaten(storage, study_id) == [ids[1]]
    other = optuna.create_study(storage=storage, study_name="other")
    other.ask()
    assert running_trials_never_beaten(storage, study_id) == [ids[1]], "only the study's own trials"
