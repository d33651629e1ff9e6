"""Generation: temperature, top-k and a priming text, deterministic for a seed."""

from __future__ import annotations

import torch

from lstmscope.model.checkpoint import LoadedModel


@torch.no_grad()
def sample(
    loaded: LoadedModel,
    *,
    prime: str = "\n",
    length: int = 500,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Continue ``prime`` by ``length`` characters; returns only the continuation."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    model, vocab = loaded.model, loaded.vocab
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    prime = prime or "\n"
    ids = torch.from_numpy(vocab.encode(prime)).to(device)[None]  # [1, P]
    logits, state = model(ids)
    out = []
    last = logits[0, -1]
    for _ in range(length):
        scaled = last.float().cpu() / temperature
        if top_k and top_k < scaled.numel():
            kth = torch.topk(scaled, top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        # The unknown-character id is never sampled: it stands for "something unseen".
        scaled[vocab.unk_id] = float("-inf")
        nxt = int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=gen))
        out.append(vocab.chars[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state)
        last = logits[0, -1]
    return "".join(out)
