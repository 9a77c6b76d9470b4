"""Addressing functions against hand-computed values, plus stability and gradient checks.

Shapes follow ntm/addressing.py: B batch, H heads, N memory rows, M row width, S shifts.
"""

import math

import pytest
import torch

from ntm import addressing

F64 = torch.float64


def t(values, dtype=F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def softmax_by_hand(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def random_distribution(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Rows on the simplex, every entry well away from zero (min about 0.02 for small N)."""
    return torch.softmax(torch.randn(*shape, generator=generator, dtype=F64) * 0.5, dim=-1)


# Memory rows [1, 0], [3, 4], [0, 0] (all zero), [-2, 0]; one batch item.
MEMORY = t([[[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]]])


# --- cosine similarity -------------------------------------------------------------------------


def test_cosine_similarity_hand_computed():
    keys = t([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])  # (1, 3, 2): three heads
    expected = t(
        [
            [
                [1.0, 0.6, 0.0, -1.0],
                [1 / math.sqrt(2), 7 / (5 * math.sqrt(2)), 0.0, -1 / math.sqrt(2)],
                [0.0, 0.0, 0.0, 0.0],  # zero key: 0 everywhere, not NaN
            ]
        ]
    )
    out = addressing.cosine_similarity(MEMORY, keys)
    assert out.shape == (1, 3, 4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_cosine_similarity_zero_row_and_zero_key_float32_finite():
    memory = torch.zeros(2, 3, 4)
    memory[1, 0] = 1.0
    keys = torch.zeros(2, 2, 4)
    keys[0, 1] = 1.0
    out = addressing.cosine_similarity(memory, keys)
    assert torch.isfinite(out).all()
    assert (out.abs() <= 1 + 1e-6).all()


def test_cosine_similarity_is_scale_invariant():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 5, 3, generator=g, dtype=F64)
    keys = torch.randn(2, 2, 3, generator=g, dtype=F64)
    torch.testing.assert_close(
        addressing.cosine_similarity(memory * 7.0, keys * 0.3), addressing.cosine_similarity(memory, keys), atol=1e-7, rtol=0
    )


# --- content weights ---------------------------------------------------------------------------


def test_content_weights_is_softmax_of_strength_times_cosine():
    keys = t([[[1.0, 0.0], [1.0, 1.0]]])
    strengths = t([[2.0, 0.5]])
    cos0 = [1.0, 0.6, 0.0, -1.0]
    cos1 = [1 / math.sqrt(2), 7 / (5 * math.sqrt(2)), 0.0, -1 / math.sqrt(2)]
    expected = t([[softmax_by_hand([2.0 * c for c in cos0]), softmax_by_hand([0.5 * c for c in cos1])]])
    out = addressing.content_weights(MEMORY, keys, strengths)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 2, dtype=F64))


def test_content_weights_zero_strength_is_uniform():
    keys = t([[[1.0, 0.0]]])
    out = addressing.content_weights(MEMORY, keys, t([[0.0]]))
    torch.testing.assert_close(out, torch.full((1, 1, 4), 0.25, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_content_weights_huge_strength_is_finite_and_one_hot(dtype):
    memory = MEMORY.to(dtype)
    keys = t([[[1.0, 0.0], [0.0, 0.0]]], dtype)  # second key is zero: all similarities 0
    out = addressing.content_weights(memory, keys, t([[1e6, 1e6]], dtype))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 0], t([1.0, 0.0, 0.0, 0.0], dtype))
    torch.testing.assert_close(out[0, 1], torch.full((4,), 0.25, dtype=dtype))


# --- interpolation -----------------------------------------------------------------------------


def test_interpolate_hand_computed():
    content = t([[[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]])
    previous = t([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    gates = t([[0.25, 1.0, 0.0]])
    expected = t([[[0.175, 0.05, 0.775], [0.7, 0.2, 0.1], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(addressing.interpolate(content, previous, gates), expected)


# --- circular shift ----------------------------------------------------------------------------
# Convention (ntm/addressing.py): shifts[..., j + k] is the probability of offset j in -k..k and
# out[i] = sum_j w[i - j] * shifts[j + k] (indices mod N). A one-hot shift on offset +1 therefore
# moves the focus one row forward: out = torch.roll(w, +1), i.e. out[i] = w[i - 1].


def reference_shift(weights: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    n, s = weights.shape[-1], shifts.shape[-1]
    k = (s - 1) // 2
    out = torch.zeros_like(weights)
    for i in range(n):
        for j in range(-k, k + 1):
            out[..., i] += weights[..., (i - j) % n] * shifts[..., j + k]
    return out


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_circular_shift_one_hot_is_roll(offset):
    weights = t([[[0.1, 0.2, 0.3, 0.4, 0.0]]])
    shifts = torch.zeros(1, 1, 3, dtype=F64)
    shifts[..., offset + 1] = 1.0
    out = addressing.circular_shift(weights, shifts)
    torch.testing.assert_close(out, torch.roll(weights, shifts=offset, dims=-1))


def test_circular_shift_plus_one_moves_focus_forward():
    weights = t([[[1.0, 0.0, 0.0, 0.0, 0.0]]])
    out = addressing.circular_shift(weights, t([[[0.0, 0.0, 1.0]]]))
    torch.testing.assert_close(out, t([[[0.0, 1.0, 0.0, 0.0, 0.0]]]))
    # and -1 wraps row 0 around to the last row
    out = addressing.circular_shift(weights, t([[[1.0, 0.0, 0.0]]]))
    torch.testing.assert_close(out, t([[[0.0, 0.0, 0.0, 0.0, 1.0]]]))


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
def test_circular_shift_one_hot_is_roll_range_two(offset):
    g = torch.Generator().manual_seed(1)
    weights = random_distribution(2, 3, 7, generator=g)
    shifts = torch.zeros(2, 3, 5, dtype=F64)
    shifts[..., offset + 2] = 1.0
    torch.testing.assert_close(addressing.circular_shift(weights, shifts), torch.roll(weights, shifts=offset, dims=-1))


def test_circular_shift_mixed_with_wrap_around_hand_computed():
    # w = [0.6, 0, 0, 0, 0.4], s over offsets (-1, 0, +1) = (0.2, 0.5, 0.3)
    # out[0] = 0.5*w[0] + 0.3*w[4] + 0.2*w[1] = 0.30 + 0.12       = 0.42
    # out[1] = 0.5*w[1] + 0.3*w[0] + 0.2*w[2] = 0.18              = 0.18
    # out[2] = 0.5*w[2] + 0.3*w[1] + 0.2*w[3]                     = 0.00
    # out[3] = 0.5*w[3] + 0.3*w[2] + 0.2*w[4] = 0.08              = 0.08
    # out[4] = 0.5*w[4] + 0.3*w[3] + 0.2*w[0] = 0.20 + 0.12       = 0.32
    weights = t([[[0.6, 0.0, 0.0, 0.0, 0.4], [1.0, 0.0, 0.0, 0.0, 0.0]]])
    shifts = t([[[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]]])
    expected = t([[[0.42, 0.18, 0.0, 0.08, 0.32], [0.5, 0.3, 0.0, 0.0, 0.2]]])
    out = addressing.circular_shift(weights, shifts)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 2, dtype=F64))


@pytest.mark.parametrize("n,s", [(5, 1), (5, 3), (6, 5), (5, 5), (9, 3)])
def test_circular_shift_matches_reference_loop(n, s):
    g = torch.Generator().manual_seed(n * 10 + s)
    weights = random_distribution(3, 2, n, generator=g)
    shifts = random_distribution(3, 2, s, generator=g)
    out = addressing.circular_shift(weights, shifts)
    torch.testing.assert_close(out, reference_shift(weights, shifts))
    torch.testing.assert_close(out.sum(-1), torch.ones(3, 2, dtype=F64))


# --- sharpening --------------------------------------------------------------------------------


def test_sharpen_hand_computed():
    weights = t([[[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]])
    gammas = t([[2.0, 1.0]])
    expected = t([[[0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38], [0.5, 0.3, 0.2]]])
    torch.testing.assert_close(addressing.sharpen(weights, gammas), expected)


def test_sharpen_equals_power_formula_random_positive():
    g = torch.Generator().manual_seed(2)
    weights = random_distribution(2, 3, 6, generator=g)
    gammas = 1 + 3 * torch.rand(2, 3, generator=g, dtype=F64)
    powered = weights ** gammas.unsqueeze(-1)
    expected = powered / powered.sum(-1, keepdim=True)
    torch.testing.assert_close(addressing.sharpen(weights, gammas), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sharpen_with_zeros_and_large_gamma_is_finite(dtype):
    weights = t([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]], dtype)
    gammas = t([[1.0, 1e3, 1e3, 1e3]], dtype)
    out = addressing.sharpen(weights, gammas)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 4, dtype=dtype))
    expected = t([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]], dtype)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("gamma", [1.0, 1e3])
def test_sharpen_gradient_finite_at_zero_weights(gamma):
    weights = t([[[0.0, 0.7, 0.3, 0.0]]], torch.float32).requires_grad_()
    gammas = t([[gamma]], torch.float32).requires_grad_()
    out = addressing.sharpen(weights, gammas)
    (out * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(weights.grad).all()
    assert torch.isfinite(gammas.grad).all()


# --- address (full pipeline) -------------------------------------------------------------------


def test_address_is_composition_of_the_steps():
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(2, 6, 4, generator=g, dtype=F64)
    previous = random_distribution(2, 3, 6, generator=g)
    keys = torch.randn(2, 3, 4, generator=g, dtype=F64)
    strengths = 5 * torch.rand(2, 3, generator=g, dtype=F64)
    gates = torch.rand(2, 3, generator=g, dtype=F64)
    shifts = random_distribution(2, 3, 3, generator=g)
    gammas = 1 + torch.rand(2, 3, generator=g, dtype=F64)
    content = torch.softmax(strengths.unsqueeze(-1) * addressing.cosine_similarity(memory, keys), -1)
    gated = gates.unsqueeze(-1) * content + (1 - gates.unsqueeze(-1)) * previous
    shifted = reference_shift(gated, shifts)
    powered = shifted ** gammas.unsqueeze(-1)
    expected = powered / powered.sum(-1, keepdim=True)
    out = addressing.address(memory, previous, keys, strengths, gates, shifts, gammas)
    torch.testing.assert_close(out, expected)


# --- read and write ----------------------------------------------------------------------------

MEM3 = t([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # (1, N=3, M=2)


def test_read_hand_computed():
    weights = t([[[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]]])
    expected = t([[[2.0, 3.0], [0.3 + 4.5, 0.4 + 5.4]]])
    torch.testing.assert_close(addressing.read(MEM3, weights), expected)


def test_write_one_head_hand_computed():
    # M * (1 - w e^T) + w a^T with w = [0.5, 0.5, 0], e = [1, 0.5], a = [10, 20]
    weights = t([[[0.5, 0.5, 0.0]]])
    erase = t([[[1.0, 0.5]]])
    add = t([[[10.0, 20.0]]])
    expected = t([[[0.5 + 5, 1.5 + 10], [1.5 + 5, 3.0 + 10], [5.0, 6.0]]])
    torch.testing.assert_close(addressing.write(MEM3, weights, erase, add), expected)
    w, e, a, m = weights[0, 0], erase[0, 0], add[0, 0], MEM3[0]
    torch.testing.assert_close(addressing.write(MEM3, weights, erase, add)[0], m * (1 - torch.outer(w, e)) + torch.outer(w, a))


def test_write_two_heads_erases_multiply_adds_sum_order_free():
    # head 1: w = [1, 0, 0], e = [0.5, 0], a = [1, 1]; head 2: w = [0.5, 0.5, 0], e = [1, 1], a = [2, 0]
    # row 0: keep = [0.5, 1] * [0.5, 0.5] = [0.25, 0.5] -> [0.25, 1.0] + [1, 1] + [1, 0] = [2.25, 2.0]
    # row 1: keep = [1, 1] * [0.5, 0.5]                  -> [1.5, 2.0]  + [1, 0]          = [2.5, 2.0]
    # row 2: untouched
    weights = t([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]])
    erase = t([[[0.5, 0.0], [1.0, 1.0]]])
    add = t([[[1.0, 1.0], [2.0, 0.0]]])
    expected = t([[[2.25, 2.0], [2.5, 2.0], [5.0, 6.0]]])
    torch.testing.assert_close(addressing.write(MEM3, weights, erase, add), expected)
    swap = [1, 0]
    torch.testing.assert_close(addressing.write(MEM3, weights[:, swap], erase[:, swap], add[:, swap]), expected)


def test_write_random_heads_order_free_and_batched():
    g = torch.Generator().manual_seed(4)
    memory = torch.randn(3, 5, 4, generator=g, dtype=F64)
    weights = random_distribution(3, 3, 5, generator=g)
    erase = torch.rand(3, 3, 4, generator=g, dtype=F64)
    add = torch.randn(3, 3, 4, generator=g, dtype=F64)
    out = addressing.write(memory, weights, erase, add)
    perm = [2, 0, 1]
    torch.testing.assert_close(addressing.write(memory, weights[:, perm], erase[:, perm], add[:, perm]), out)
    for b in range(3):
        keep = torch.ones(5, 4, dtype=F64)
        added = torch.zeros(5, 4, dtype=F64)
        for h in range(3):
            keep = keep * (1 - torch.outer(weights[b, h], erase[b, h]))
            added = added + torch.outer(weights[b, h], add[b, h])
        torch.testing.assert_close(out[b], memory[b] * keep + added)


# --- gradients at awkward points ---------------------------------------------------------------


def test_gradients_finite_with_zero_memory_rows_and_zero_weights():
    memory = torch.zeros(2, 6, 4)
    memory[0, 1] = torch.tensor([1.0, -1.0, 0.5, 0.0])
    memory = memory.requires_grad_()
    previous = torch.zeros(2, 2, 6)
    previous[:, :, 0] = 1.0  # one-hot: the other entries are exact zeros
    previous = previous.requires_grad_()
    keys = torch.zeros(2, 2, 4)
    keys[1, 0] = 1.0
    keys = keys.requires_grad_()
    strengths = torch.tensor([[1.0, 1e6], [0.0, 10.0]], requires_grad=True)
    gates = torch.tensor([[0.0, 0.5], [1.0, 0.0]], requires_grad=True)
    shifts = torch.tensor([0.0, 1.0, 0.0]).expand(2, 2, 3).clone().requires_grad_()
    gammas = torch.tensor([[1.0, 1e3], [20.0, 1.0]], requires_grad=True)
    weights = addressing.address(memory, previous, keys, strengths, gates, shifts, gammas)
    assert torch.isfinite(weights).all()
    reads = addressing.read(memory, weights)
    new_memory = addressing.write(memory, weights, torch.full((2, 2, 4), 0.5), torch.ones(2, 2, 4))
    (reads.sum() + new_memory.sum() + (weights * torch.arange(6.0)).sum()).backward()
    for tensor in (memory, previous, keys, strengths, gates, shifts, gammas):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()


def test_cosine_gradient_finite_at_zero_key_and_zero_row():
    memory = torch.zeros(1, 3, 2, requires_grad=True)
    keys = torch.zeros(1, 1, 2, requires_grad=True)
    addressing.content_weights(memory, keys, torch.ones(1, 1)).pow(2).sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(keys.grad).all()


# --- gradcheck (float64) -----------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _req(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_()


def test_gradcheck_cosine_similarity():
    g = _gen(10)
    memory = _req(torch.randn(2, 5, 3, generator=g, dtype=F64))
    keys = _req(torch.randn(2, 2, 3, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.cosine_similarity, (memory, keys))


def test_gradcheck_content_weights():
    g = _gen(11)
    memory = _req(torch.randn(2, 5, 3, generator=g, dtype=F64))
    keys = _req(torch.randn(2, 2, 3, generator=g, dtype=F64))
    strengths = _req(3 * torch.rand(2, 2, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.content_weights, (memory, keys, strengths))


def test_gradcheck_interpolate():
    g = _gen(12)
    content = _req(random_distribution(2, 2, 5, generator=g))
    previous = _req(random_distribution(2, 2, 5, generator=g))
    gates = _req(torch.rand(2, 2, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.interpolate, (content, previous, gates))


@pytest.mark.parametrize("s", [1, 3, 5])
def test_gradcheck_circular_shift(s):
    g = _gen(13 + s)
    weights = _req(random_distribution(2, 2, 6, generator=g))
    shifts = _req(random_distribution(2, 2, s, generator=g))
    assert torch.autograd.gradcheck(addressing.circular_shift, (weights, shifts))


def test_gradcheck_sharpen():
    g = _gen(14)
    weights = _req(random_distribution(2, 2, 5, generator=g))  # entries well away from 0
    gammas = _req(1 + 2 * torch.rand(2, 2, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.sharpen, (weights, gammas))


def test_gradcheck_address():
    g = _gen(15)
    memory = _req(torch.randn(2, 5, 3, generator=g, dtype=F64))
    previous = _req(random_distribution(2, 2, 5, generator=g))
    keys = _req(torch.randn(2, 2, 3, generator=g, dtype=F64))
    strengths = _req(3 * torch.rand(2, 2, generator=g, dtype=F64))
    gates = _req(0.1 + 0.8 * torch.rand(2, 2, generator=g, dtype=F64))
    shifts = _req(random_distribution(2, 2, 3, generator=g))
    gammas = _req(1 + 2 * torch.rand(2, 2, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.address, (memory, previous, keys, strengths, gates, shifts, gammas))


def test_gradcheck_read():
    g = _gen(16)
    memory = _req(torch.randn(2, 5, 3, generator=g, dtype=F64))
    weights = _req(random_distribution(2, 2, 5, generator=g))
    assert torch.autograd.gradcheck(addressing.read, (memory, weights))


def test_gradcheck_write():
    g = _gen(17)
    memory = _req(torch.randn(2, 5, 3, generator=g, dtype=F64))
    weights = _req(random_distribution(2, 2, 5, generator=g))
    erase = _req(torch.rand(2, 2, 3, generator=g, dtype=F64))
    add = _req(torch.randn(2, 2, 3, generator=g, dtype=F64))
    assert torch.autograd.gradcheck(addressing.write, (memory, weights, erase, add))
