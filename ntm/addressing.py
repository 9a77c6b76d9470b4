"""NTM addressing (Graves et al. 2014, section 3.3), one short function per step.

Shapes: B batch, H heads, N memory rows, M row width, S shift positions.
Heads are a tensor dimension: every function addresses all heads at once.
"""

import torch
import torch.nn.functional as F

# Guards the cosine denominator against all-zero memory rows or keys.
_NORM_EPS = 1e-8
# Keeps log(w) finite when a weighting entry is exactly zero.
_LOG_EPS = 1e-12


def cosine_similarity(memory: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each key with each memory row.

    memory: (B, N, M), keys: (B, H, M) -> (B, H, N).
    """
    dot = torch.matmul(keys, memory.transpose(1, 2))
    # sqrt(x + eps) instead of norm(): norm's gradient is NaN at a zero vector.
    key_norm = torch.sqrt((keys * keys).sum(-1) + _NORM_EPS)
    row_norm = torch.sqrt((memory * memory).sum(-1) + _NORM_EPS)
    return dot / (key_norm.unsqueeze(-1) * row_norm.unsqueeze(1))


def content_weights(memory: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """Content weighting: softmax over rows of strength * cosine similarity.

    memory: (B, N, M), keys: (B, H, M), strengths: (B, H) >= 0 -> (B, H, N).
    """
    return F.softmax(strengths.unsqueeze(-1) * cosine_similarity(memory, keys), dim=-1)


def interpolate(content: torch.Tensor, previous: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Gate between the content weighting and the previous weighting.

    content, previous: (B, H, N), gates: (B, H) in [0, 1] -> (B, H, N).
    """
    g = gates.unsqueeze(-1)
    return g * content + (1 - g) * previous


def circular_shift(weights: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circular convolution of each weighting with its shift distribution.

    weights: (B, H, N), shifts: (B, H, S) over offsets -k..k with S = 2k + 1 <= N
    -> (B, H, N), where out[i] = sum_j weights[i - j] * shifts[j + k].
    """
    k = (shifts.shape[-1] - 1) // 2
    padded = torch.cat([weights[..., weights.shape[-1] - k :], weights, weights[..., :k]], dim=-1)
    windows = padded.unfold(-1, shifts.shape[-1], 1)  # (B, H, N, S): weights[i - k .. i + k]
    return torch.matmul(windows, shifts.flip(-1).unsqueeze(-1)).squeeze(-1)


def sharpen(weights: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """w^gamma / sum(w^gamma), computed as a softmax in log space.

    The log-space form has no 0 * log(0) in its gradient and no division by a zero sum.
    weights: (B, H, N), gammas: (B, H) >= 1 -> (B, H, N).
    """
    return F.softmax(gammas.unsqueeze(-1) * torch.log(weights + _LOG_EPS), dim=-1)


def address(
    memory: torch.Tensor,
    previous: torch.Tensor,
    keys: torch.Tensor,
    strengths: torch.Tensor,
    gates: torch.Tensor,
    shifts: torch.Tensor,
    gammas: torch.Tensor,
) -> torch.Tensor:
    """The full addressing pipeline: content, interpolation, shift, sharpening -> (B, H, N)."""
    weights = interpolate(content_weights(memory, keys, strengths), previous, gates)
    return sharpen(circular_shift(weights, shifts), gammas)


def read(memory: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of memory rows. memory: (B, N, M), weights: (B, H, N) -> (B, H, M)."""
    return torch.matmul(weights, memory)


def write(memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Erase then add for all write heads at once (Graves et al. 2014, section 3.2).

    Several heads' erasures multiply and their additions sum, so their order does not matter.
    memory: (B, N, M), weights: (B, H, N), erase: (B, H, M) in [0, 1], add: (B, H, M) -> (B, N, M).
    """
    w = weights.unsqueeze(-1)
    keep = torch.prod(1 - w * erase.unsqueeze(2), dim=1)
    return memory * keep + torch.matmul(weights.transpose(1, 2), add)
