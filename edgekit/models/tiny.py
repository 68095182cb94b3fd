"""Tiny decoder-only models, one per supported architecture, for fast tests.

They are built from configs (no weights to download), seeded, and then trained for a few seconds on the
public-domain text shipped with edgekit (byte-level tokens). A purely random model is a poor stand-in:
its next-token distribution is nearly flat, so any quantization flips its argmax and parity numbers
measure noise. A briefly trained one has peaked predictions like a real model. Built once and cached
under the edgekit home like any other source. Widths are multiples of 128 so every recipe's group/block
size divides them.
"""

from __future__ import annotations

from typing import Any

# Shared shape: 2 layers, 4 query heads of 32, 2 KV heads (grouped-query attention as in the real models).
_COMMON: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_COMMON, "model_type": "llama", "tie_word_embeddings": True},
    "qwen2": {**_COMMON, "model_type": "qwen2", "tie_word_embeddings": True},
    # phi3 fuses gate and up into one projection of 2 x intermediate_size outputs: 2 x 256 would equal the
    # vocabulary, and ORT GenAI's model builder takes any linear with vocab_size outputs for the lm_head
    # (so 384). original_max_position_embeddings = max_position_embeddings keeps plain RoPE (else LongRoPE).
    "phi3": {**_COMMON, "model_type": "phi3", "tie_word_embeddings": False, "pad_token_id": 0,
             "intermediate_size": 384, "original_max_position_embeddings": 1024},
    "gemma": {**_COMMON, "model_type": "gemma", "head_dim": 32, "tie_word_embeddings": True},
}


def tiny_names() -> list[str]:
    return [f"tiny-{arch}" for arch in TINY_CONFIGS]


TRAIN_STEPS = 300
TRAIN_SEQ = 64
TRAIN_BATCH = 8


def build_tiny(arch: str) -> Any:
    """A seeded tiny model of ``arch``, trained briefly on the shipped corpus (deterministic on CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekit.data import training_text
    from edgekit.models.loading import ByteTokenizer

    cfg = TINY_CONFIGS[arch]
    config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    ids = torch.tensor(ByteTokenizer(cfg["vocab_size"]).encode(training_text()))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(TRAIN_STEPS):
        starts = torch.randint(0, len(ids) - TRAIN_SEQ - 1, (TRAIN_BATCH,), generator=generator)
        batch = torch.stack([ids[s : s + TRAIN_SEQ] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model
