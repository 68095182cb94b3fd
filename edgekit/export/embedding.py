"""Quantized embedding tables built from core ATen ops only.

torchao's weight-only embedding quantization lowers to ``quantized_decomposed::embedding_4bit``-style
kernels that ExecuTorch's Python runtime (and a runner built without the quantized kernel library)
does not register, so the program fails to load. This module stores the table as packed integers with
per-group scales and dequantizes the gathered rows with ``embedding`` + shifts + multiply, which every
ExecuTorch runtime with portable kernels runs. The table really is 4 or 8 bits per weight on disk.
"""

from __future__ import annotations

from typing import Any

import torch


class PackedEmbedding(torch.nn.Module):
    """Symmetric per-group quantized embedding: int8 codes, or int4 codes packed two per byte."""

    codes: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int) -> None:
        super().__init__()
        vocab, dim = weight.shape
        if dim % group_size or bits not in (4, 8) or (bits == 4 and dim % 2):
            raise ValueError(f"cannot quantize a {vocab}x{dim} embedding to {bits} bits in groups of {group_size}")
        self.bits, self.group_size, self.embedding_dim = bits, group_size, dim
        qmax = 2 ** (bits - 1) - 1
        groups = weight.detach().float().reshape(vocab, dim // group_size, group_size)
        scales = groups.abs().amax(dim=-1).clamp(min=1e-8) / qmax
        codes = torch.clamp(torch.round(groups / scales[..., None]), -qmax - 1, qmax).to(torch.int8)
        codes = codes.reshape(vocab, dim)
        if bits == 4:
            nibbles = (codes + 8).to(torch.uint8)  # 0..15
            codes = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).to(torch.uint8)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales.contiguous())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = torch.nn.functional.embedding(input_ids, self.codes)
        if self.bits == 4:
            low = torch.bitwise_and(rows, 15).to(torch.int16) - 8
            high = torch.bitwise_right_shift(rows, 4).to(torch.int16) - 8
            values = torch.stack([low, high], dim=-1).reshape(*rows.shape[:-1], self.embedding_dim).float()
        else:
            values = rows.float()
        scales = torch.nn.functional.embedding(input_ids, self.scales)
        grouped = values.reshape(*values.shape[:-1], -1, self.group_size) * scales[..., None]
        return grouped.reshape(*values.shape[:-1], self.embedding_dim)


def quantize_embeddings(model: Any, bits: int, group_size: int) -> int:
    """Replace every ``nn.Embedding`` whose width the group divides; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Embedding) and child.embedding_dim % group_size == 0:
                setattr(parent, name, PackedEmbedding(child.weight, bits, group_size))
                replaced += 1
    return replaced
