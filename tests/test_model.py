"""NTM model: shapes, head layouts, memory initialisation, stability, batch independence, determinism."""

import pytest
import torch
import torch.nn.functional as F

from ntm import addressing
from ntm.model import NTM, NTMState, head_stages

IN, OUT, CTRL, N, M = 5, 3, 16, 8, 4


def make(seed: int = 0, **kwargs) -> NTM:
    torch.manual_seed(seed)
    kwargs.setdefault("controller_size", CTRL)
    kwargs.setdefault("memory_n", N)
    kwargs.setdefault("memory_m", M)
    return NTM(IN, OUT, **kwargs)


def inputs(t: int, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (t, batch, IN), generator=g).float()


def check_state(model: NTM, state: NTMState, batch: int) -> None:
    heads = len(model.head_order)
    assert state.reads.shape == (batch, model.num_reads, M)
    assert state.weights.shape == (batch, heads, N)
    assert state.memory.shape == (batch, N, M)
    torch.testing.assert_close(state.weights.sum(-1), torch.ones(batch, heads))
    assert (state.weights >= 0).all()


# --- head_stages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order,stages",
    [
        ("rw", [(0, 1, 1, 0)]),
        ("rrww", [(0, 2, 2, 0)]),
        ("rrw", [(0, 2, 1, 0)]),
        ("rwrw", [(0, 1, 1, 0), (2, 1, 1, 1)]),
        ("wr", [(0, 0, 1, 0), (1, 1, 0, 1)]),
        ("rwwr", [(0, 1, 2, 0), (3, 1, 0, 2)]),
        ("wwrr", [(0, 0, 2, 0), (2, 2, 0, 2)]),
        ("rwrrww", [(0, 1, 1, 0), (2, 2, 2, 1)]),
    ],
)
def test_head_stages(order, stages):
    assert head_stages(order) == stages
    # stages cover the heads exactly once, in order
    assert sum(r + w for _, r, w, _ in stages) == len(order)
    assert [s[0] for s in stages] == sorted(s[0] for s in stages)


@pytest.mark.parametrize("order", ["", "r", "w", "rr", "ww", "rx", "RW", "r w"])
def test_head_stages_invalid(order):
    with pytest.raises(ValueError):
        head_stages(order)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(head_order="rrr"),
        dict(head_order="rwx"),
        dict(memory_init="zeros"),
        dict(memory_init=""),
        dict(controller="gru"),
        dict(shift_range=4),  # 2 * 4 + 1 = 9 > N = 8
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


def test_negative_shift_range_raises():
    with pytest.raises(ValueError):
        make(shift_range=-1)


def test_default_head_order_from_num_heads():
    assert make(num_heads=1).head_order == "rw"
    model = make(num_heads=3)
    assert model.head_order == "rrrwww"
    assert model.stages == [(0, 3, 3, 0)]


# --- shapes -------------------------------------------------------------------------------------

LAYOUTS = [
    dict(num_heads=1),
    dict(num_heads=3),
    dict(head_order="rw"),
    dict(head_order="rrw"),
    dict(head_order="wr"),
    dict(head_order="rwrw"),
    dict(head_order="rwwr"),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
@pytest.mark.parametrize("batch", [1, 5])
def test_forward_and_step_shapes(layout, batch):
    model = make(**layout)
    x = inputs(4, batch)
    out = model(x, output_steps=3)
    assert out.shape == (3, batch, OUT)
    assert torch.isfinite(out).all()

    state = model.initial_state(batch)
    check_state(model, state, batch)
    logits, state = model.step(x[0], state)
    assert logits.shape == (batch, OUT)
    check_state(model, state, batch)


@pytest.mark.parametrize(
    "controller,layers", [("lstm", 1), ("lstm", 2), ("feedforward", 1), ("feedforward", 2)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("memory_init", ["constant", "learned", "random"])
def test_controllers_and_memory_inits(controller, layers, memory_init):
    batch = 3
    model = make(controller=controller, controller_layers=layers, memory_init=memory_init, head_order="rrw")
    state = model.initial_state(batch)
    if controller == "lstm":
        assert len(state.controller) == layers
        for h, c in state.controller:
            assert h.shape == c.shape == (batch, CTRL)
    else:
        assert state.controller == ()
    logits, state = model.step(inputs(1, batch)[0], state)
    assert logits.shape == (batch, OUT)
    check_state(model, state, batch)
    assert model(inputs(3, batch), output_steps=2).shape == (2, batch, OUT)


# --- memory initialisation ----------------------------------------------------------------------


def test_constant_memory_init():
    model = make(memory_init="constant")
    assert "memory0" not in dict(model.named_parameters())
    torch.testing.assert_close(model.memory0, torch.full((N, M), 1e-6))
    memory = model.initial_state(4).memory
    assert memory.shape == (4, N, M)
    torch.testing.assert_close(memory, torch.full((4, N, M), 1e-6))
    assert (make(memory_init="constant", memory_init_value=0.5).memory0 == 0.5).all()


def test_learned_memory_init_is_a_parameter():
    model = make(memory_init="learned")
    assert "memory0" in dict(model.named_parameters())
    bound = 1 / (N + M) ** 0.5
    assert (model.memory0.abs() <= bound).all()
    assert model.memory0.std() > 0


def test_random_memory_init_is_fixed_buffer():
    model = make(memory_init="random")
    assert "memory0" not in dict(model.named_parameters())
    assert "memory0" in dict(model.named_buffers())
    assert model.memory0.std() > 0
    first = model.initial_state(2).memory.clone()
    model(inputs(2, 2), 2)
    torch.testing.assert_close(model.initial_state(2).memory, first)  # same draw every sequence
    torch.testing.assert_close(first[0], first[1])


@pytest.mark.parametrize("memory_init", ["constant", "learned", "random"])
@pytest.mark.parametrize("controller", ["lstm", "feedforward"])
def test_no_nan_in_outputs_and_gradients_at_init(memory_init, controller):
    model = make(memory_init=memory_init, controller=controller, head_order="rwrw")
    x = inputs(6, 3)
    targets = torch.randint(0, 2, (6, 3, OUT), generator=torch.Generator().manual_seed(5)).float()
    logits = model(x, output_steps=6)
    assert torch.isfinite(logits).all()
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if memory_init == "learned":
        assert model.memory0.grad.abs().sum() > 0


def test_no_nan_with_extreme_head_parameters():
    """Saturated controller outputs (clipped at +-20) still give finite outputs and gradients."""
    model = make(head_order="rwwr")
    with torch.no_grad():
        model.head_params.bias.fill_(1e3)
    logits = model(inputs(4, 2), 4)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


# --- the stage-batched step equals heads applied one at a time ----------------------------------


def reference_step(model: NTM, x: torch.Tensor, state: NTMState):
    """One step with every head addressed on its own (H=1 calls), in head_order, using the
    stage semantics of ntm/model.py: heads of one stage ("r*w*") address the memory as it was
    at the start of the stage; their writes are combined (erasures multiply, additions sum)."""
    batch = x.shape[0]
    hidden, controller_state = model.controller(torch.cat([x, state.reads.reshape(batch, -1)], 1), state.controller)
    params = model.head_params(hidden).clamp(-model.controller_clip, model.controller_clip)
    a, m, order = model.address_size, model.m, model.head_order
    write_index = {h: i for i, h in enumerate(i for i, c in enumerate(order) if c == "w")}
    erase_add = params[:, len(order) * a :]
    memory, reads, weights = state.memory, [], []
    for first, n_read, n_write, _ in model.stages:
        stage_memory, erases, adds, write_w = memory, [], [], []
        for h in range(first, first + n_read + n_write):
            p = params[:, h * a : (h + 1) * a]
            w = addressing.address(
                stage_memory,
                state.weights[:, h : h + 1],
                p[:, None, :m],  # per head: key, strength, sharpening, gate, shift logits
                F.softplus(p[:, None, m]),
                torch.sigmoid(p[:, None, m + 2]),
                F.softmax(p[:, None, m + 3 : m + 3 + model.shifts], -1),
                1 + F.softplus(p[:, None, m + 1]),
            )
            weights.append(w)
            if order[h] == "r":
                reads.append(addressing.read(stage_memory, w))
            else:
                i = write_index[h]
                erases.append(torch.sigmoid(erase_add[:, None, 2 * m * i : 2 * m * i + m]))
                adds.append(erase_add[:, None, 2 * m * i + m : 2 * m * (i + 1)])
                write_w.append(w)
        if write_w:
            memory = addressing.write(stage_memory, torch.cat(write_w, 1), torch.cat(erases, 1), torch.cat(adds, 1))
    reads, weights = torch.cat(reads, 1), torch.cat(weights, 1)
    logits = model.output(torch.cat([hidden, reads.reshape(batch, -1)], 1))
    return logits, NTMState(controller_state, reads, weights, memory)


@pytest.mark.parametrize("order", ["rw", "rrw", "wr", "rwrw", "rwwr", "rrrwww", "wwrr"])
def test_step_matches_per_head_reference(order):
    model = make(head_order=order, memory_init="random")
    x = inputs(4, 3)
    state = ref_state = model.initial_state(3)
    for t in range(4):
        logits, state = model.step(x[t], state)
        ref_logits, ref_state = reference_step(model, x[t], ref_state)
        torch.testing.assert_close(logits, ref_logits)
        torch.testing.assert_close(state.weights, ref_state.weights)
        torch.testing.assert_close(state.reads, ref_state.reads)
        torch.testing.assert_close(state.memory, ref_state.memory)


def test_write_then_read_sees_the_write():
    """With "wr" the read comes after the write within a step: it reads the updated memory."""
    model = make(head_order="wr", memory_init="random")
    state = model.initial_state(2)
    _, new = model.step(inputs(1, 2)[0], state)
    torch.testing.assert_close(new.reads, addressing.read(new.memory, new.weights[:, 1:2]))
    assert not torch.allclose(new.memory, state.memory)


# --- batch independence and determinism ---------------------------------------------------------


@pytest.mark.parametrize("memory_init", ["constant", "random"])
def test_batch_items_are_independent(memory_init):
    model = make(head_order="rw", memory_init=memory_init)
    x = inputs(5, 4, seed=7)
    with torch.no_grad():
        batched = model(x, output_steps=5)
        for i in range(4):
            alone = model(x[:, i : i + 1], output_steps=5)
            torch.testing.assert_close(batched[:, i : i + 1], alone, atol=1e-5, rtol=0)


def test_batch_items_independent_in_gradients():
    """The loss of item 0 has no gradient path through item 1's input."""
    model = make(head_order="rwrw")
    x = inputs(3, 2).requires_grad_()
    model(x, output_steps=3)[:, 0].sum().backward()
    assert x.grad[:, 1].abs().max() == 0
    assert x.grad[:, 0].abs().max() > 0


@pytest.mark.parametrize("memory_init", ["constant", "learned", "random"])
def test_same_seed_same_parameters_and_outputs(memory_init):
    a, b = make(seed=3, memory_init=memory_init), make(seed=3, memory_init=memory_init)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    x = inputs(4, 2)
    assert torch.equal(a(x, 4), b(x, 4))
    c = make(seed=4, memory_init=memory_init)
    assert not torch.equal(a.head_params.weight, c.head_params.weight)


# --- add_activation: tanh bounds what one write adds -----------------------------------------


@pytest.mark.parametrize("activation, bounded", [("none", False), ("tanh", True)])
def test_tanh_bounds_what_a_write_adds_to_memory(activation, bounded):
    torch.manual_seed(0)
    model = NTM(3, 3, memory_n=4, memory_m=4, add_activation=activation)  # a write spreads over 4 rows at most
    with torch.no_grad():
        model.head_params.bias.fill_(15.0)  # every head parameter large, the add vector's included
    state = model.initial_state(2)
    _, state = model.step(torch.zeros(2, 3), state)
    added = (state.memory - model.memory0).abs().max().item()
    assert (added <= 1.0) == bounded, added


def test_an_unknown_add_activation_is_refused():
    with pytest.raises(ValueError, match="add_activation must be one of"):
        NTM(3, 3, add_activation="relu")


# --- cell_clip: an LSTM controller's cells stay within the bound -----------------------------


@pytest.mark.parametrize("cell_clip", [0.0, 2.0])
def test_cell_clip_bounds_the_controller_cells_along_a_sequence(cell_clip):
    torch.manual_seed(0)
    model = NTM(3, 3, memory_n=8, memory_m=4, cell_clip=cell_clip)
    cell = model.controller.cells[0]
    with torch.no_grad():  # input and forget gates open and the candidate at +1: the cell counts up
        cell.bias_ih.zero_()
        cell.bias_ih[: 2 * cell.hidden_size].fill_(20.0)
        cell.bias_ih[2 * cell.hidden_size : 3 * cell.hidden_size].fill_(20.0)
    state = model.initial_state(2)
    for _ in range(6):
        _, state = model.step(torch.zeros(2, 3), state)
    largest = state.controller[0][1].abs().max().item()
    assert (largest <= 2.0) == (cell_clip > 0), largest


def test_cell_clip_needs_an_lstm_controller():
    with pytest.raises(ValueError, match="cell_clip must be >= 0, and 0 unless the controller is lstm"):
        NTM(3, 3, controller="feedforward", cell_clip=5.0)
