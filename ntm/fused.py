"""The NTM's whole sequence, forward and backward, in one call of a small C++ library.

`train.compile=fused`: ntm/csrc/fused_ntm.cpp runs every time step of a sequence and its
backpropagation through time with hand-written derivatives, for an NTM whose controller is one
layer, LSTM or feed-forward, and whose heads act in one stage (all reads, then all writes). At batch 1 a time step
is a few dozen tiny tensor operations, and their per-call overhead, not arithmetic, is what a
compiled step spends its time on; here a sequence is two calls. The eager step (NTM.step) stays
the reference: tests compare losses and gradients with it.

The library is compiled on first use with the system's C++ compiler (`c++`, or $CXX) for this
machine's CPU, into ~/.cache/ntm-fused (or $NTM_FUSED_CACHE), keyed by the source and the CPU,
written to a temporary name and renamed, so concurrent processes never load half a file.
`python -m ntm.fused` builds it ahead of time (make venv does).
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "fused_ntm.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-std=c++17"]


class Dims(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("T", "B", "I", "C", "R", "W", "N", "M", "S", "O")] + [
        ("controller_clip", ctypes.c_float),
        ("cell_clip", ctypes.c_float),
        ("add_tanh", ctypes.c_int),
        ("feedforward", ctypes.c_int),
    ]


def _cpu_id() -> str:
    """What -march=native compiles for: the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def library_path() -> Path:
    compiler = os.environ.get("CXX", "c++")
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, *FLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("NTM_FUSED_CACHE", Path.home() / ".cache" / "ntm-fused"))
    return cache / f"fused_ntm-{key}.so"


def build() -> Path:
    """Compile the library unless this source, compiler and CPU's build is already cached."""
    path = library_path()
    if path.exists():
        return path
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"train.compile=fused needs a C++ compiler: {compiler!r} (set CXX) was not found")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        built = Path(tmp) / path.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{result.stderr[-2000:]}")
        os.replace(built, path)
    return path


_lib = None


def library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(str(build()))
        pointers = [ctypes.c_void_p] * 20
        lib.ntm_tape_floats.argtypes, lib.ntm_tape_floats.restype = [ctypes.POINTER(Dims)], ctypes.c_long
        lib.ntm_forward.argtypes, lib.ntm_forward.restype = [ctypes.POINTER(Dims), *pointers[:16]], None
        lib.ntm_backward.argtypes, lib.ntm_backward.restype = [ctypes.POINTER(Dims), *pointers[:19]], None
        _lib = lib
    return _lib


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _forward(dims: Dims, inputs: list[torch.Tensor], tape: torch.Tensor | None) -> torch.Tensor:
    """inputs: xs, the initial state (h, c, reads, weightings, memory), the weights; all contiguous."""
    logits = inputs[0].new_empty(dims.T, dims.B, dims.O)
    library().ntm_forward(ctypes.byref(dims), *map(_ptr, inputs), _ptr(logits), None if tape is None else _ptr(tape))
    return logits


class FusedSequence(torch.autograd.Function):
    """logits (T, B, O) of every time step, from the inputs, the initial state and the weights.

    The initial state's tensors are (B, ...) and the weights nn.Linear's; autograd carries the
    gradients of the initial state back through its expand and softmax to the parameters.
    """

    @staticmethod
    def forward(ctx, dims, *inputs):
        inputs = [t.detach().contiguous() for t in inputs]
        tape = inputs[0].new_empty(dims.T * dims.B * library().ntm_tape_floats(ctypes.byref(dims)))
        logits = _forward(dims, inputs, tape)
        ctx.dims = dims
        ctx.save_for_backward(tape, *inputs[6:])
        ctx.state_shapes = [t.shape for t in inputs[1:6]]
        return logits

    @staticmethod
    def backward(ctx, dlogits):
        tape, w_ih, b_ih, w_hh, b_hh, w_p, b_p, w_o, b_o = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (w_ih, b_ih, w_hh, b_hh, w_p, b_p, w_o, b_o)]
        state_grads = [tape.new_zeros(shape) for shape in ctx.state_shapes]
        library().ntm_backward(ctypes.byref(ctx.dims), _ptr(tape), _ptr(dlogits.contiguous()), _ptr(w_ih),
                               _ptr(w_hh), _ptr(w_p), _ptr(w_o), *map(_ptr, grads), *map(_ptr, state_grads))  # fmt: skip
        return None, None, *state_grads, *grads


def unsupported(controller: str, controller_layers: int, head_stages: int) -> str | None:
    """What the fused sequence needs that this NTM lacks (the model config's words), or None."""
    if controller_layers != 1:
        return "model.controller_layers=1"
    if head_stages != 1:
        return "heads in one stage: every read head before every write head (model.head_order like rrww)"
    return None


def run_sequence(model, xs: torch.Tensor) -> torch.Tensor:
    """The logits (T, B, O) of model (an ntm.model.NTM) on xs (T, B, I), every step in one call."""
    T, B, _ = xs.shape
    state = model.initial_state(B)
    size = model.controller.output_size
    if model.controller_name == "lstm":
        ((h0, c0),) = state.controller
        cell = model.controller.cells[0]
        w_ih, b_ih, w_hh, b_hh = cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh
        cell_clip = model.controller.cell_clip
    else:  # a tanh layer: no state and no recurrent weights, which the library leaves unread
        layer = model.controller.layers[0]
        h0 = c0 = xs.new_zeros(B, size)
        w_ih, b_ih, w_hh, b_hh = layer.weight, layer.bias, xs.new_empty(0), xs.new_empty(0)
        cell_clip = 0.0
    dims = Dims(T, B, xs.shape[2], size, model.num_reads, model.num_writes, model.n, model.m, model.shifts,
                model.output.out_features, model.controller_clip, cell_clip, int(model.add_activation == "tanh"),
                int(model.controller_name == "feedforward"))  # fmt: skip
    inputs = (xs, h0, c0, state.reads, state.weights, state.memory, w_ih, b_ih, w_hh, b_hh,
              model.head_params.weight, model.head_params.bias, model.output.weight, model.output.bias)  # fmt: skip
    if torch.is_grad_enabled():
        return FusedSequence.apply(dims, *inputs)
    return _forward(dims, [t.contiguous() for t in inputs], tape=None)


if __name__ == "__main__":
    print(build())
