"""Copy and repeat-copy tasks: encodings, sampling ranges, seeding, evaluation sets, error bits."""

import dataclasses
import math
import re

import pytest
import torch

from ntm.tasks import TASKS, make_task
from ntm.tasks.base import Task
from ntm.tasks.copy import CopyConfig, CopyTask
from ntm.tasks.repeat_copy import RepeatCopyConfig, RepeatCopyTask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def copy_task(**kwargs) -> CopyTask:
    return make_task(CopyConfig(**kwargs))


def repeat_task(**kwargs) -> RepeatCopyTask:
    return make_task(RepeatCopyConfig(**kwargs))


def test_registry_and_sizes():
    assert set(TASKS) >= {"copy", "repeat_copy"}
    copy, repeat = copy_task(), repeat_task()
    assert isinstance(copy, CopyTask) and isinstance(repeat, RepeatCopyTask)
    assert (copy.input_size, copy.output_size) == (9, 8)
    assert (repeat.input_size, repeat.output_size) == (10, 9)
    assert (copy.config.min_len, copy.config.max_len) == (1, 20)
    assert (repeat.config.min_repeats, repeat.config.max_repeats) == (1, 10)
    small = copy_task(seq_width=3)
    assert (small.input_size, small.output_size) == (4, 3)


@pytest.mark.parametrize(
    "config",
    [
        CopyConfig(min_len=5, max_len=2),
        CopyConfig(min_len=0),
        CopyConfig(eval_lengths=[0]),
        RepeatCopyConfig(min_repeats=0),
        RepeatCopyConfig(min_repeats=4, max_repeats=3),
        RepeatCopyConfig(eval_repeats=[0]),
    ],
)
def test_invalid_task_config_rejected(config):
    with pytest.raises(ValueError):
        config.check()


@pytest.mark.parametrize(
    "valid, field, beyond, key",
    [
        (CopyConfig(), "min_len", 0, "task.min_len"),
        (CopyConfig(min_len=5, max_len=5), "min_len", 6, "task.min_len"),
        (CopyConfig(eval_lengths=[1]), "eval_lengths", [1, 0], "task.eval_lengths"),
        (RepeatCopyConfig(max_len=10), "min_repeats", 0, "task.min_repeats"),
        (RepeatCopyConfig(min_repeats=3, max_repeats=3), "max_repeats", 2, "task.min_repeats"),
        (RepeatCopyConfig(eval_repeats=[1]), "eval_repeats", [0], "task.eval_repeats"),
    ],
    ids=["copy-defaults", "copy-one-length", "copy-eval-length-1", "repeat-defaults", "repeat-one-count", "repeat-eval-1"],
)
def test_check_accepts_a_config_at_the_boundary_and_refuses_one_step_past_it(valid, field, beyond, key):
    valid.check()  # raises if the check is stricter than the documented bounds
    with pytest.raises(ValueError, match=re.escape(f"{key}=")):
        dataclasses.replace(valid, **{field: beyond}).check()


def assert_bits(x: torch.Tensor) -> None:
    assert ((x == 0) | (x == 1)).all()


# --- copy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 20])
def test_copy_encoding(length):
    task = copy_task()
    inputs, targets = task.batch(length, 4, gen(length))
    assert inputs.shape == (length + 1, 4, 9)
    assert targets.shape == (length, 4, 8)
    assert_bits(inputs)
    assert_bits(targets)
    # delimiter: channel 8, only at step L
    assert (inputs[:length, :, 8] == 0).all()
    assert (inputs[length, :, 8] == 1).all()
    assert (inputs[length, :, :8] == 0).all()
    # bits: channels 0..7 of steps 0..L-1 are the targets
    assert torch.equal(inputs[:length, :, :8], targets)


def test_copy_sample_consistent_encoding():
    task = copy_task(min_len=2, max_len=6)
    g = gen(1)
    for _ in range(20):
        inputs, targets = task.sample(3, g)
        length = targets.shape[0]
        assert 2 <= length <= 6
        assert inputs.shape == (length + 1, 3, 9)
        assert torch.equal(inputs[:length, :, :8], targets)
        assert inputs[:, :, 8].sum(0).tolist() == [1.0, 1.0, 1.0]
        assert (inputs[length, :, 8] == 1).all()


def test_copy_lengths_cover_range():
    task = copy_task(min_len=3, max_len=7)
    g = gen(2)
    lengths = [task.sample(1, g)[1].shape[0] for _ in range(300)]
    assert min(lengths) >= 3 and max(lengths) <= 7
    assert set(lengths) == set(range(3, 8))


def test_copy_bits_are_balanced():
    _, targets = copy_task().batch(20, 50, gen(3))
    assert 0.45 < targets.mean().item() < 0.55


# --- repeat copy --------------------------------------------------------------------------------


def discrete_uniform_moments(lo: int, hi: int) -> tuple[float, float]:
    return (lo + hi) / 2, ((hi - lo + 1) ** 2 - 1) / 12


@pytest.mark.parametrize("length,repeats", [(1, 1), (3, 4), (5, 10)])
def test_repeat_copy_encoding(length, repeats):
    task = repeat_task(min_repeats=1, max_repeats=10)
    inputs, targets = task.batch(length, repeats, 3, gen(length * 100 + repeats))
    assert inputs.shape == (length + 2, 3, 10)
    assert targets.shape == (length * repeats + 1, 3, 9)
    bits = inputs[:length, :, :8]
    assert_bits(bits)
    assert_bits(targets)
    # delimiter at step L channel 8, nowhere else
    assert (inputs[length, :, 8] == 1).all()
    assert inputs[:, :, 8].sum().item() == 3
    # repeat count at step L + 1 channel 9, nowhere else
    mean, var = discrete_uniform_moments(1, 10)
    expected = (repeats - mean) / math.sqrt(var)
    torch.testing.assert_close(inputs[length + 1, :, 9], torch.full((3,), expected))
    assert (inputs[: length + 1, :, 9] == 0).all()
    assert (inputs[length:, :, :8] == 0).all()
    assert (inputs[length + 1, :, 8] == 0).all()
    # targets: the sequence r times, then the end marker alone on channel 8
    for r in range(repeats):
        assert torch.equal(targets[r * length : (r + 1) * length, :, :8], bits)
    assert (targets[:-1, :, 8] == 0).all()
    assert (targets[-1, :, 8] == 1).all()
    assert (targets[-1, :, :8] == 0).all()


@pytest.mark.parametrize("lo,hi", [(1, 10), (2, 5), (1, 2), (3, 20)])
def test_repeat_normalisation_formula_and_moments(lo, hi):
    task = repeat_task(min_repeats=lo, max_repeats=hi)
    mean, var = discrete_uniform_moments(lo, hi)
    for r in range(lo, hi + 1):
        assert task.normalise(r) == pytest.approx((r - mean) / math.sqrt(var))
    values = torch.tensor([task.normalise(r) for r in range(lo, hi + 1)], dtype=torch.float64)
    assert values.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert values.var(unbiased=False).item() == pytest.approx(1.0)


def test_repeat_normalisation_single_repeat_count_is_centred():
    task = repeat_task(min_repeats=3, max_repeats=3)
    assert task.normalise(3) == 0.0
    assert math.isfinite(task.normalise(5))


def test_repeat_copy_sample_ranges_cover_both():
    task = repeat_task(min_len=1, max_len=4, min_repeats=2, max_repeats=5)
    g = gen(4)
    seen = set()
    for _ in range(400):
        inputs, targets = task.sample(1, g)
        length = inputs.shape[0] - 2
        assert 1 <= length <= 4
        repeats = (targets.shape[0] - 1) // length
        assert targets.shape[0] == length * repeats + 1
        assert 2 <= repeats <= 5
        assert inputs[length + 1, 0, 9].item() == pytest.approx(task.normalise(repeats))
        seen.add((length, repeats))
    assert seen == {(n, r) for n in range(1, 5) for r in range(2, 6)}


# --- seeding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [copy_task, repeat_task], ids=["copy", "repeat_copy"])
def test_same_seed_same_batches_different_seed_different(factory):
    task = factory()

    def draw(seed: int) -> list:
        g = gen(seed)
        return [task.sample(2, g) for _ in range(5)]

    a, b, c = draw(11), draw(11), draw(12)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert any(xa.shape != xc.shape or not torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_sampling_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    copy_task().sample(2, gen(5))
    repeat_task().sample(2, gen(5))
    assert torch.equal(torch.rand(3), expected)


# --- evaluation sets ----------------------------------------------------------------------------


def assert_same_sets(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert len(a[name]) == len(b[name])
        for (xa, ya), (xb, yb) in zip(a[name], b[name]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_copy_eval_sets_fixed_and_named():
    config = dict(eval_lengths=[30, 50], eval_batches=3, eval_batch_size=2, eval_seed=7)
    a, b = copy_task(**config).eval_sets(), copy_task(**config).eval_sets()
    assert list(a) == ["train", "len30", "len50"]
    assert_same_sets(a, b)
    assert len(a["train"]) == 3
    for inputs, targets in a["train"]:
        assert 1 <= targets.shape[0] <= 20 and targets.shape[1] == 2
        assert inputs.shape == (targets.shape[0] + 1, 2, 9)
    for length in (30, 50):
        (inputs, targets), *rest = a[f"len{length}"]
        assert not rest
        assert inputs.shape == (length + 1, 2, 9) and targets.shape == (length, 2, 8)
    other = copy_task(**{**config, "eval_seed": 8}).eval_sets()
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(a["len30"], other["len30"]))


def test_eval_sets_independent_of_global_seed_and_run_seed():
    config = dict(eval_batches=2, eval_batch_size=2)
    torch.manual_seed(1)
    a = copy_task(**config).eval_sets()
    torch.manual_seed(2)
    b = copy_task(**config).eval_sets()
    assert_same_sets(a, b)


def test_repeat_copy_eval_sets_fixed_and_named():
    config = dict(min_len=1, max_len=5, max_repeats=4, eval_lengths=[8], eval_repeats=[6, 9], eval_batches=2, eval_batch_size=3)
    a, b = repeat_task(**config).eval_sets(), repeat_task(**config).eval_sets()
    assert list(a) == ["train", "len8", "reps6", "reps9"]
    assert_same_sets(a, b)
    task = repeat_task(**config)
    # lengths beyond training use the largest training repeat count; repeats beyond use max_len
    ((inputs, targets),) = a["len8"]
    assert inputs.shape == (10, 3, 10) and targets.shape == (8 * 4 + 1, 3, 9)
    assert inputs[9, 0, 9].item() == pytest.approx(task.normalise(4))
    for r in (6, 9):
        ((inputs, targets),) = a[f"reps{r}"]
        assert inputs.shape == (7, 3, 10) and targets.shape == (5 * r + 1, 3, 9)
        assert inputs[6, 0, 9].item() == pytest.approx(task.normalise(r))
        assert task.normalise(r) > task.normalise(4)  # extrapolated, beyond the training range


def test_eval_sets_without_generalisation_sets():
    sets = repeat_task(eval_lengths=[], eval_repeats=[], eval_batches=1, eval_batch_size=1).eval_sets()
    assert list(sets) == ["train"]


# --- error bits ---------------------------------------------------------------------------------


def test_error_bits_hand_made():
    # T = 2 steps, B = 3 sequences, O = 2 bits
    targets = torch.tensor(
        [
            [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
            [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]],
        ]
    )
    logits = torch.tensor(
        [
            [[3.0, -2.0], [-0.1, 0.2], [5.0, 5.0]],  # seq0 right, seq1 1 wrong, seq2 2 wrong
            [[-1.0, 0.5], [0.1, -9.0], [-4.0, -0.3]],  # seq0 right, seq1 1 wrong, seq2 2 wrong
        ]
    )
    bits = Task.error_bits(logits, targets)
    assert bits.shape == (3,)
    assert bits.tolist() == [0.0, 2.0, 4.0]
    assert copy_task().error_bits(logits, targets).tolist() == [0.0, 2.0, 4.0]


def test_error_bits_threshold_is_probability_half():
    targets = torch.ones(1, 1, 4)
    probs = torch.tensor([[[0.49, 0.51, 0.01, 0.99]]])
    logits = torch.log(probs) - torch.log1p(-probs)
    assert Task.error_bits(logits, targets).tolist() == [2.0]
    assert Task.error_bits(logits, 1 - targets).tolist() == [2.0]


def test_error_bits_perfect_and_worst_on_real_batch():
    task = repeat_task(max_len=4, max_repeats=3)
    _, targets = task.sample(5, gen(9))
    perfect = (targets * 2 - 1) * 10
    assert Task.error_bits(perfect, targets).tolist() == [0.0] * 5
    worst = -perfect
    assert Task.error_bits(worst, targets).tolist() == [float(targets.shape[0] * targets.shape[2])] * 5
