"""Greedy decoding of a batch with prompt lookup: the text the model would write one token at a time, in fewer steps.

An explanation mostly copies the facts of its prompt ("... directed by Andrew Stanton and starring Albert Brooks").
Each step, every row proposes the tokens that followed the last time its latest tokens appeared in its own prompt or
text (`lookup_draft`); one forward pass checks them all, and a row keeps the longest proposed run that matches what
it would have chosen greedily, plus the model's own next token. A step costs about what one token costs on a CPU
(the weights are read once per step either way), so each copied run saves steps.

The rows share one key-value cache. A row that keeps fewer tokens than were checked leaves masked holes in it;
positions count only the kept tokens, so every row computes what it would alone. A row that is done leaves the batch
(and the cache), so the last long explanation does not carry the finished ones along.

    decode(model, rows, mask, cache, ...) -> one token list per row
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

DRAFT_TOKENS = 6
"""Tokens proposed per row and step. Longer runs are rare in an explanation; each proposed token costs compute."""
MATCH_TOKENS = (3, 2)
"""A proposal follows the latest earlier occurrence of the row's last 3 tokens, else of its last 2."""


def lookup_draft(tokens: Sequence[int], size: int = DRAFT_TOKENS) -> list[int]:
    """The tokens that followed the latest earlier occurrence of `tokens`' last n-gram (n from MATCH_TOKENS); []."""
    for n in MATCH_TOKENS:
        if len(tokens) <= n:
            continue
        tail = list(tokens[-n:])
        for start in range(len(tokens) - n - 1, -1, -1):
            if list(tokens[start:start + n]) == tail:
                return list(tokens[start + n:start + n + size])
    return []


def decode(model, torch, rows: list[list[int]], mask: list[list[int]], cache, *, skip: int, max_new_tokens: int,
           finished: Callable[[list[int]], int | None], lookup: bool = True) -> list[list[int]]:
    """Greedy continuations of `rows` (the whole prompts, padded in their middle; `mask` is 0 at the padding).
    `cache` holds the first `skip` columns (shared by every row; batch 1) or is None with `skip` 0.
    `finished(tokens)` says how many of a row's new tokens to keep once the row is done (it wrote a stop string or
    the end token), else None. `lookup=False` proposes nothing: plain greedy decoding, one token per step."""
    device = model.device
    batch = len(rows)
    prompts = [[t for t, m in zip(row, row_mask, strict=True) if m] for row, row_mask in zip(rows, mask, strict=True)]
    if cache is not None:
        cache.batch_repeat_interleave(batch)
    attention = torch.tensor(mask, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(torch.tensor([row[skip:] for row in rows], device=device), attention_mask=attention,
                position_ids=positions[:, skip:], past_key_values=cache, use_cache=True,
                logits_to_keep=last_position(torch, len(rows[0]) - skip, device))
    cache = out.past_key_values
    texts = [[token] for token in out.logits[:, -1].argmax(-1).tolist()]
    lengths = attention.sum(-1).tolist()  # each row's kept tokens: the position of the next one
    done = [_settle(text, finished, max_new_tokens) for text in texts]
    live = list(range(batch))  # the rows still writing, in cache order: a finished row leaves the batch
    while True:
        still = [j for j, k in enumerate(live) if not done[k]]
        if not still:
            return texts
        if len(still) < len(live):
            cache.batch_select_indices(torch.tensor(still, device=device))
            attention = attention[still]
            live = [live[j] for j in still]
        drafts = [lookup_draft(prompts[k] + texts[k]) if lookup else [] for k in live]
        width = 1 + max(len(draft) for draft in drafts)
        inputs = [[texts[k][-1], *draft, *[0] * (width - 1 - len(draft))]
                  for k, draft in zip(live, drafts, strict=True)]
        fresh = [[1] * (1 + len(draft)) + [0] * (width - 1 - len(draft)) for draft in drafts]
        attention = torch.cat([attention, torch.tensor(fresh, device=device)], dim=-1)
        step_positions = torch.tensor([[lengths[k] + j for j in range(width)] for k in live], device=device)
        out = model(torch.tensor(inputs, device=device), attention_mask=attention, position_ids=step_positions,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        chosen = out.logits.argmax(-1).tolist()
        for j, (k, draft) in enumerate(zip(live, drafts, strict=True)):
            kept = 0
            while kept < len(draft) and draft[kept] == chosen[j][kept]:
                kept += 1
            attention[j, attention.shape[1] - width + 1 + kept:] = 0  # the proposals it rejected become holes
            lengths[k] += 1 + kept
            texts[k] += [*draft[:kept], chosen[j][kept]]
            done[k] = _settle(texts[k], finished, max_new_tokens)


def last_position(torch, width: int, device):
    """`logits_to_keep` for the last position only, as an index: the integer 1 slices the hidden states without
    copying them, and on a batch the LM head then copies its weights once per row (five rows of 65 tokens after a
    shared start: 0.66 s with the integer, 0.42 s with the index, `python -m eval.engine_profile`; equal logits)."""
    return torch.tensor([width - 1], device=device)


def _settle(tokens: list[int], finished: Callable[[list[int]], int | None], max_new_tokens: int) -> bool:
    """Cut a row's tokens where it is done (in place); True when it is."""
    keep = finished(tokens)
    if keep is None and len(tokens) < max_new_tokens:
        return False
    del tokens[min(len(tokens) if keep is None else keep, max_new_tokens):]
    return True
