"""Turn (prompt, [step_1 .. step_K]) into one token sequence with a separator after each step (PRMs).

A process reward model reads one score per reasoning step from **one** forward pass per
solution. The sequence is the prompt part of :class:`~rewardline.modeling.formatting.Formatter`
followed by the steps, each closed by the step separator token ``SEP``::

    pair (encoders):  [CLS] prompt [SEP] step_1 SEP step_2 SEP ... step_K SEP [SEP]
    text (decoders):  prompt "\\n\\n" step_1 SEP step_2 SEP ... step_K SEP [EOS]
    chat:             chat-template head (generation prompt), then the steps as in ``text``

and the model's head is applied to the hidden state at each ``SEP`` (``positions``): the logit
of step k, ``P(step k correct) = σ(w · h_SEP_k + b)``. In a decoder, ``h_SEP_k`` sees the prompt
and steps ``≤ k`` only; in an encoder it sees the whole solution (bidirectional attention), which
still gives one score per step from one pass.

The separator (:func:`choose_separator`) is a token the vocabulary already has and text never
produces: BERT-style ``[unused0]``, Qwen-style ``<|reserved_special_token_0|>`` (no embedding
resize; the model saves as a ``*ForTokenClassification``, :mod:`rewardline.modeling.hf_format`); a vocabulary
with none of them gets the special token ``<|step|>`` added and the embeddings resized (the saved tokenizer
carries it). Its text is stored in ``reward_config.json`` (``step_separator``). Steps are tokenised
separately and the separator's id is inserted between them, so no text inside a step can become
a separator.

Truncation (``B = max_length − n_special``, prompt length ``Lp``, step lengths ``l_k + 1``
with their separator, ``S = Σ (l_k + 1)``): the prompt is cut from the left first, down to
``min(Lp, min_prompt_tokens, B // 2)``; if the steps still do not fit, the **tail steps are
dropped whole** (their labels with them) and counted in ``steps_dropped``: a step is never cut
inside. The prompt then takes back whatever room the kept steps leave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import Encoding, Tokenizer

from rewardline.modeling.formatting import Formatter

#: Existing never-produced tokens tried in order, before adding :data:`ADDED_SEPARATOR`.
SEPARATOR_CANDIDATES = ("[unused0]", "<|reserved_special_token_0|>", "<unused0>")
ADDED_SEPARATOR = "<|step|>"


def choose_separator(tokenizer: Any) -> tuple[str, bool]:
    """``(token text, added)``: the first of :data:`SEPARATOR_CANDIDATES` in the vocabulary, else
    :data:`ADDED_SEPARATOR` added to ``tokenizer`` as a special token (``added=True``: resize the embeddings)."""
    vocab = tokenizer.get_vocab()
    for token in SEPARATOR_CANDIDATES:
        if token in vocab:
            return token, False
    if ADDED_SEPARATOR not in vocab:
        tokenizer.add_special_tokens({"additional_special_tokens": [ADDED_SEPARATOR]})
        return ADDED_SEPARATOR, True
    return ADDED_SEPARATOR, False


def separator_id(tokenizer: Any, token: str) -> int:
    """The id of ``token`` in ``tokenizer``; ValueError when the vocabulary lacks it."""
    if token not in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer has no step separator {token!r} (expected the token saved with the PRM)")
    return int(tokenizer.convert_tokens_to_ids(token))


@dataclass
class EncodedSolutions:
    """Token ids of each solution, the position of each kept step's separator, what was cut."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    positions: list[list[int]]  # separator position of step k, for the kept steps (a prefix of the steps)
    steps_dropped: list[int]  # tail steps that did not fit (not scored, labels not trained on)
    prompt_truncated: list[bool]


class StepFormatter:
    """Encodes ``(prompt, steps)`` rows with a separator after each step (module docstring)."""

    def __init__(self, tokenizer: Any, formatter: Formatter, separator: str) -> None:
        self.formatter = formatter
        self.raw: Tokenizer = formatter.raw
        self.sep_id = separator_id(tokenizer, separator)
        self._sep_tokenizer = Tokenizer.from_str(self.raw.to_str())
        self._sep_tokenizer.add_special_tokens([separator])
        self.sep = self._sep_tokenizer.encode(separator, add_special_tokens=False)
        if self.sep.ids != [self.sep_id]:
            raise ValueError(f"separator {separator!r} does not encode to the single id {self.sep_id}")
        self.budget = formatter.budget

    def _keep(self, lp: int, step_lengths: list[int]) -> tuple[int, int]:
        """``(prompt tokens kept, steps kept)`` (module docstring)."""
        need = sum(n + 1 for n in step_lengths)
        if lp + need <= self.budget:
            return lp, len(step_lengths)
        floor_p = min(lp, self.formatter.config.min_prompt_tokens, self.budget // 2)
        room, kept, used = self.budget - floor_p, 0, 0
        for n in step_lengths:
            if used + n + 1 > room:
                break
            kept, used = kept + 1, used + n + 1
        return min(lp, self.budget - used), kept

    def encode(self, prompts: list[str], steps: list[list[str]]) -> EncodedSolutions:
        """Ids, token types and separator positions of each row (prompts as text)."""
        fmt = self.formatter
        heads, _ = fmt.render(prompts, [None] * len(prompts), [""] * len(prompts))
        p_encs = self.raw.encode_batch(heads, add_special_tokens=False)
        flat = [s for row in steps for s in row]
        s_encs = self.raw.encode_batch(flat, add_special_tokens=False) if flat else []
        out = EncodedSolutions([], [], [], [], [])
        start = 0
        for p, row in zip(p_encs, steps, strict=True):
            encs, start = s_encs[start : start + len(row)], start + len(row)
            keep_p, kept = self._keep(len(p.ids), [len(e.ids) for e in encs])
            lp = len(p.ids)
            if len(p.ids) > keep_p:
                p.truncate(keep_p, direction="left")
            body_parts: list[Encoding] = []
            offsets: list[int] = []  # separator offsets inside the body
            length = 0
            for e in encs[:kept]:
                length += len(e.ids)
                offsets.append(length)
                length += 1
                body_parts += [e, self.sep]
            ids, types, body_start = self._assemble(p, body_parts)
            out.input_ids.append(ids)
            out.token_type_ids.append(types)
            out.positions.append([body_start + o for o in offsets])
            out.steps_dropped.append(len(row) - kept)
            out.prompt_truncated.append(keep_p < lp)
        return out

    def _assemble(self, prompt: Encoding, body_parts: list[Encoding]) -> tuple[list[int], list[int], int]:
        """Final ids and types with the template's special tokens, and where the body starts."""
        fmt = self.formatter
        body = Encoding.merge(body_parts, growing_offsets=True) if body_parts else None
        if fmt.template == "pair":
            enc = self.raw.post_process(prompt, body, add_special_tokens=True)
            seq = enc.sequence_ids
            body_start = next((i for i, s in enumerate(seq) if s == 1), len(seq))
            return enc.ids, enc.type_ids, body_start
        merged = Encoding.merge([prompt, body], growing_offsets=True) if body is not None else prompt
        if fmt.template == "text":
            enc = self.raw.post_process(merged, None, True)
            lead = next((i for i, s in enumerate(enc.sequence_ids) if s is not None), 0)
            ids = enc.ids
            if fmt.eos_id is not None and (not ids or ids[-1] != fmt.eos_id):
                ids = ids + [fmt.eos_id]
            return ids, [0] * len(ids), lead + len(prompt.ids)
        return merged.ids, [0] * len(merged.ids), len(prompt.ids)
