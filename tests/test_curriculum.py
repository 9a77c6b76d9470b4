"""task.curriculum: training sizes grow from the smallest to the full range; evaluation does not change."""

import pytest
import torch
from conftest import TINY, compose_config

from ntm.checks import ConfigError
from ntm.config import validate
from ntm.tasks import make_task
from ntm.tasks.associative_recall import AssociativeRecallConfig
from ntm.tasks.copy import CopyConfig
from ntm.tasks.ngram import NGramConfig
from ntm.tasks.priority_sort import PrioritySortConfig
from ntm.tasks.repeat_copy import RepeatCopyConfig
from ntm.train import train


def sizes(task, progress: float, draws: int = 200) -> list[tuple[int, ...]]:
    """The sizes of the batches drawn at this progress: (length,), (length, repeats) or (items,)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(draws):
        inputs, targets = task.sample(1, g, progress)
        c = task.config
        if isinstance(c, RepeatCopyConfig):
            length = inputs.shape[0] - 2
            out.append((length, (targets.shape[0] - 1) // length))
        elif isinstance(c, AssociativeRecallConfig):
            out.append(((inputs.shape[0] - c.item_len - 2) // (c.item_len + 1),))
        else:
            out.append((targets.shape[0],))
    return out


@pytest.mark.parametrize(
    "config, start, full",
    [
        (CopyConfig(curriculum=1000), [(1,)], [(n,) for n in range(1, 21)]),
        (RepeatCopyConfig(curriculum=1000), [(1, 1)], [(n, r) for n in range(1, 11) for r in range(1, 11)]),
        (AssociativeRecallConfig(curriculum=1000), [(2,)], [(n,) for n in range(2, 7)]),
    ],
)
def test_sizes_grow_from_the_smallest_to_the_full_range(config, start, full):
    task = make_task(config)
    assert task.progress(0) == 0.0 and task.progress(500) == 0.5 and task.progress(5000) == 1.0
    assert set(sizes(task, 0.0)) == set(start)
    halfway = set(sizes(task, 0.5, 2000))
    assert halfway < set(full) and max(halfway) < max(full)
    assert set(sizes(task, 1.0, 3000)) == set(full)


def test_halfway_through_copy_draws_lengths_up_to_the_middle_of_the_range():
    task = make_task(CopyConfig(curriculum=1000))
    assert {n for (n,) in sizes(task, task.progress(500), 1000)} == set(range(1, 12))  # 1 + round(19 / 2)


def test_without_a_curriculum_progress_is_always_complete():
    task = make_task(CopyConfig())
    assert task.progress(0) == 1.0
    assert set(sizes(task, task.progress(0), 3000)) == {(n,) for n in range(1, 21)}


def test_evaluation_sets_are_the_full_distribution_with_or_without_a_curriculum():
    for config in (CopyConfig, RepeatCopyConfig, AssociativeRecallConfig):
        plain, curriculum = make_task(config()).eval_sets(), make_task(config(curriculum=10**6)).eval_sets()
        assert plain.keys() == curriculum.keys()
        for name in plain:
            for (a_in, a_out), (b_in, b_out) in zip(plain[name], curriculum[name]):
                assert torch.equal(a_in, b_in) and torch.equal(a_out, b_out)


@pytest.mark.parametrize("config", [NGramConfig, PrioritySortConfig])
def test_tasks_of_one_size_refuse_a_curriculum(config):
    with pytest.raises(ConfigError, match=r"task.curriculum=10 is not allowed: must be 0: every \w+ sequence has one size"):
        config(curriculum=10).check("task")


def test_a_negative_curriculum_is_refused():
    with pytest.raises(ConfigError, match=r"task.curriculum=-1 is not allowed: must be >= 0"):
        validate(compose_config(["task.curriculum=-1"]))


def test_a_run_with_a_curriculum_trains_on_short_sequences_first(tmp_path):
    # Training costs are error bits over the sequences drawn: short early sequences cost fewer bits.
    common = [*TINY, "train.steps=40", "train.report_interval=10", "train.eval_interval=0", "train.compile=false"]
    slow = train(validate(compose_config([*common, "task.curriculum=100000"])), tmp_path / "curriculum")
    plain = train(validate(compose_config(common)), tmp_path / "plain")
    assert slow["steps"] == plain["steps"] == 40
    assert slow["cost"] < plain["cost"]
