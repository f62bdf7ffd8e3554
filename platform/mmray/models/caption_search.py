"""Decoding captions from a caption decoder: greedy and beam search with a length penalty, BOS first,
stopping at EOS (PAD after it) or at the maximum length (BOS and EOS included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmray.models.caption_decoder import CaptionDecoder


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + length) / 6)^α, by which a beam's summed log-probability is divided."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


@torch.no_grad()
def greedy_decode(model: CaptionDecoder, memory: torch.Tensor, max_length: int) -> torch.Tensor:
    """Memory (B, M, W) → token ids (B, T), T ≤ max_length, the most likely token at every step."""
    rows = memory.shape[0]
    ids = torch.full((rows, 1), model.bos_id, dtype=torch.long, device=memory.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=memory.device)
    for _ in range(max_length - 1):
        next_ids = model.decode(memory, ids)[:, -1].float().argmax(dim=-1)  # (B,)
        next_ids = torch.where(finished, torch.full_like(next_ids, model.pad_id), next_ids)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        finished |= next_ids == model.eos_id
        if bool(finished.all()):
            break
    return ids


@torch.no_grad()
def beam_decode(model: CaptionDecoder, memory: torch.Tensor, beam: int, alpha: float, max_length: int) -> torch.Tensor:
    """Memory (B, M, W) → token ids (B, T) of the best of `beam` hypotheses per row, ranked by summed
    log-probability over the length penalty; finished hypotheses continue with PAD at no cost."""
    rows, device = memory.shape[0], memory.device
    memory = memory.repeat_interleave(beam, dim=0)  # (B·k, M, W)
    ids = torch.full((rows * beam, 1), model.bos_id, dtype=torch.long, device=device)
    scores = torch.full((rows, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis at the start
    lengths = torch.zeros(rows, beam, dtype=torch.long, device=device)
    finished = torch.zeros(rows, beam, dtype=torch.bool, device=device)
    for _ in range(max_length - 1):
        log_probs = F.log_softmax(model.decode(memory, ids)[:, -1].float(), dim=-1)  # (B·k, V)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.view(rows, beam, vocab)
        pad_only = torch.full((vocab,), float("-inf"), device=device)
        pad_only[model.pad_id] = 0.0
        log_probs = torch.where(finished[..., None], pad_only, log_probs)
        candidates = scores[..., None] + log_probs  # (B, k, V)
        new_lengths = lengths + (~finished).long()  # (B, k)
        ranked = candidates / length_penalty(new_lengths, alpha)[..., None]
        top = ranked.view(rows, -1).topk(beam, dim=1).indices  # (B, k)
        source = torch.div(top, vocab, rounding_mode="floor")  # (B, k) hypothesis each came from
        tokens = top % vocab  # (B, k)
        scores = candidates.view(rows, -1).gather(1, top)
        lengths = new_lengths.gather(1, source)
        finished = finished.gather(1, source) | (tokens == model.eos_id)
        history = ids.view(rows, beam, -1).gather(1, source[..., None].expand(-1, -1, ids.shape[1]))
        ids = torch.cat([history, tokens[..., None]], dim=2).view(rows * beam, -1)
        if bool(finished.all()):
            break
    best = (scores / length_penalty(lengths, alpha)).argmax(dim=1)  # (B,)
    chosen = ids.view(rows, beam, -1)[torch.arange(rows, device=device), best]  # (B, T)
    used = int((chosen != model.pad_id).sum(dim=1).max())  # drop trailing columns that are PAD in every row
    return chosen[:, :used]


def decode_captions(
    model: CaptionDecoder, images: torch.Tensor, beam: int = 1, alpha: float = 0.6, max_length: int | None = None
) -> torch.Tensor:
    """Normalised images (B, 3, S, S) → caption token ids (B, T); beam 1 is greedy."""
    limit = min(max_length or model.max_length, model.max_length)
    if limit < 2:
        raise ValueError(f"max_length must leave room for BOS and one token, got {limit}")
    with torch.no_grad():
        memory = model.memory(images)
    if beam == 1:
        return greedy_decode(model, memory, limit)
    return beam_decode(model, memory, beam, alpha, limit)
