"""Turn (prompt, response) into one token sequence for the reward model.

Three templates, picked by ``template="auto"``:

* ``chat``  – the tokenizer's chat template: ``messages + [assistant: response]``. The
  rendered text is split at the end of the generation prompt, so the prompt part and
  the response part are tokenised (and truncated) separately.
* ``pair``  – encoder style (BERT, MiniLM, DeBERTa ...): the tokenizer's own pair layout,
  e.g. ``[CLS] prompt [SEP] response [SEP]`` with segment ids 0 / 1.
* ``text``  – decoders without a chat template: ``prompt + separator + response`` plus
  the tokenizer's special tokens and a final EOS (the token the reward is read at).

Truncation never cuts the end of the response. With ``B = max_length - n_special``
tokens available, prompt length ``Lp`` and response length ``Lr``::

    if Lp + Lr <= B:  keep everything
    else:             keep_p = max(B - Lr, min(Lp, min_prompt_tokens, B // 2))
                      keep_r = B - keep_p
                      prompt   -> its last keep_p tokens (cut from the left)
                      response -> its last keep_r tokens (cut from the left, only when
                                  even a minimal prompt leaves too little room)

Nothing is dropped for length: every sequence is kept, and the number of sequences
whose prompt / response was cut is returned with the ids and reported by training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tokenizers import Encoding, Tokenizer

TEMPLATES = ("auto", "chat", "pair", "text")


@dataclass(frozen=True)
class FormatConfig:
    """How prompt and response become one sequence (saved with the model)."""

    template: str = "auto"  # auto | chat | pair | text
    max_length: int = 256
    min_prompt_tokens: int = 64  # prompt tokens kept before the response is cut
    text_separator: str = "\n\n"  # between prompt and response in the "text" template

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_template(tokenizer: Any, template: str) -> str:
    """``auto`` -> ``chat`` if the tokenizer has a chat template, else ``pair`` when it
    has a separator token (encoders), else ``text``."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template != "auto":
        return template
    if getattr(tokenizer, "chat_template", None):
        return "chat"
    if getattr(tokenizer, "sep_token_id", None) is not None:
        return "pair"
    return "text"


def _raw_tokenizer(tokenizer: Any) -> Tokenizer:
    """A copy of the fast tokenizer's Rust backend with padding and truncation off."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("rewardline needs a fast (tokenizers-backed) tokenizer")
    raw = Tokenizer.from_str(backend.to_str())
    raw.no_padding()
    raw.no_truncation()
    return raw


def _keep_lengths(lp: int, lr: int, budget: int, min_prompt: int) -> tuple[int, int]:
    """Token counts kept of prompt and response (see the module docstring)."""
    if lp + lr <= budget:
        return lp, lr
    keep_p = max(budget - lr, min(lp, min_prompt, budget // 2))
    return keep_p, budget - keep_p


def _tail(enc: Encoding, keep: int) -> Encoding:
    """``enc`` cut to its last ``keep`` tokens (in place)."""
    if len(enc.ids) > keep:
        enc.truncate(keep, direction="left")
    return enc


@dataclass(frozen=True)
class SpecialLayout:
    """Where a tokenizer's post-processor puts its special tokens around n = 1 or 2 sequences, and the type id it
    gives each part, so rows are assembled from id lists without it::

        ids   = specials[0] + seq_0 + specials[1] (+ seq_1 + specials[2])
        types = special_types[0] + [seq_types[0]] * len(seq_0) + special_types[1] ...

    ``post_process`` itself is exact but slow on cut sequences: an ``Encoding`` cut by ``truncate`` keeps every
    cut-off piece as an overflow, and ``post_process`` builds the pair of every prompt piece with every response
    piece (200 rows of 300 + 1,500 tokens at ``max_length`` 8: 298 s, against 1.3 s at 512)."""

    specials: tuple[tuple[int, ...], ...]
    special_types: tuple[tuple[int, ...], ...]
    seq_types: tuple[int, ...]

    def apply(self, seqs: list[list[int]]) -> tuple[list[int], list[int]]:
        """(ids, type ids) of ``seqs`` with the special tokens, as ``post_process`` gives them."""
        ids, types = list(self.specials[0]), list(self.special_types[0])
        for k, seq in enumerate(seqs):
            ids += seq
            types += [self.seq_types[k]] * len(seq)
            ids += self.specials[k + 1]
            types += self.special_types[k + 1]
        return ids, types

    @classmethod
    def learn(cls, raw: Tokenizer, n: int) -> SpecialLayout | None:
        """The layout of ``raw.post_process`` for ``n`` sequences, read from one probe and checked on a second of
        other lengths; None when the post-processor is not one fixed layout (then call it per row)."""
        def probe(lengths: tuple[int, ...]) -> tuple[list[list[int]], Encoding]:
            encs = [raw.encode(" ".join(["hello"] * k), add_special_tokens=False) for k in lengths]
            return [e.ids for e in encs], raw.post_process(encs[0], encs[1] if n == 2 else None, True)

        seqs, out = probe((2, 3)[:n])
        specials: list[list[int]] = [[] for _ in range(n + 1)]
        special_types: list[list[int]] = [[] for _ in range(n + 1)]
        seq_types: list[int] = [0] * n
        current, left = -1, 0  # the sequence whose tokens came last; how many of its tokens are still to come
        for token, type_id, special in zip(out.ids, out.type_ids, out.special_tokens_mask, strict=True):
            if special:
                specials[current + 1].append(token)
                special_types[current + 1].append(type_id)
                continue
            if left == 0:  # the next sequence starts (sequences may also be adjacent)
                current += 1
                if current == n:
                    return None
                left, seq_types[current] = len(seqs[current]), type_id
            left -= 1
        layout = cls(tuple(map(tuple, specials)), tuple(map(tuple, special_types)), tuple(seq_types))
        for lengths in ((2, 3)[:n], (5, 1)[:n]):
            seqs, out = probe(lengths)
            if layout.apply(seqs) != (out.ids, out.type_ids):
                return None
        return layout


class Formatter:
    """Formats and tokenises (prompt, response) rows into reward-model inputs."""

    def __init__(self, tokenizer: Any, config: FormatConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.template = resolve_template(tokenizer, config.template)
        self.raw = _raw_tokenizer(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        post = self.raw.post_processor
        self.layout = SpecialLayout.learn(self.raw, 2 if self.template == "pair" else 1)
        if self.template == "pair":
            self.n_special = post.num_special_tokens_to_add(True) if post is not None else 0
        elif self.template == "text":
            self.n_special = (post.num_special_tokens_to_add(False) if post is not None else 0) + (
                1 if self.eos_id is not None else 0
            )
        else:
            self.n_special = 0
        self.budget = config.max_length - self.n_special
        if self.budget < 2:
            raise ValueError(f"max_length={config.max_length} leaves no room for prompt and response")

    # -- text rendering -------------------------------------------------------------
    def _chat_parts(self, prompt: str, messages: list[dict] | None, response: str) -> tuple[str, str]:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages] if messages else None
        msgs = msgs or [{"role": "user", "content": prompt}]
        head = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            msgs + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(head):  # template renders the turn differently: split at the response
            cut = full.rfind(response)
            head = full[:cut] if cut >= 0 else head
        return head, full[len(head) :]

    def render(self, prompts: list[str], messages: list[list[dict] | None], responses: list[str]) -> tuple[
        list[str], list[str]
    ]:
        """Prompt-part and response-part texts, before tokenisation."""
        if self.template == "chat":
            parts = [self._chat_parts(p, m, r) for p, m, r in zip(prompts, messages, responses, strict=True)]
            return [h for h, _ in parts], [t for _, t in parts]
        if self.template == "text":
            return [p + self.config.text_separator for p in prompts], list(responses)
        return list(prompts), list(responses)

    # -- tokenisation ---------------------------------------------------------------
    def encode(
        self,
        prompts: list[str],
        responses: list[str],
        messages: list[list[dict] | None] | None = None,
    ) -> dict[str, list]:
        """Token ids for each row.

        Returns ``input_ids``, ``token_type_ids`` (lists of ints), ``length`` and the flags
        ``prompt_truncated`` / ``response_truncated``.
        """
        messages = messages if messages is not None else [None] * len(prompts)
        heads, tails = self.render(prompts, messages, responses)
        p_encs = self.raw.encode_batch(heads, add_special_tokens=False)
        r_encs = self.raw.encode_batch(tails, add_special_tokens=False)
        out: dict[str, list] = {
            "input_ids": [],
            "token_type_ids": [],
            "length": [],
            "prompt_truncated": [],
            "response_truncated": [],
        }
        min_prompt = min(self.config.min_prompt_tokens, self.budget // 2)
        for p, r in zip(p_encs, r_encs, strict=True):
            lp, lr = len(p.ids), len(r.ids)
            keep_p, keep_r = _keep_lengths(lp, lr, self.budget, min_prompt)
            ids, types = self._assemble(p, r, keep_p, keep_r)
            out["input_ids"].append(ids)
            out["token_type_ids"].append(types)
            out["length"].append(len(ids))
            out["prompt_truncated"].append(keep_p < lp)
            out["response_truncated"].append(keep_r < lr)
        return out

    def _assemble(self, p: Encoding, r: Encoding, keep_p: int, keep_r: int) -> tuple[list[int], list[int]]:
        """(ids, type ids) of the last ``keep_p`` prompt and ``keep_r`` response tokens in the template's layout:
        the post-processor's special tokens (:class:`SpecialLayout`; ``post_process`` on cut encodings when it is
        not one fixed layout), and for ``text`` a final EOS and type ids 0."""
        p_ids, r_ids = p.ids[len(p.ids) - keep_p :], r.ids[len(r.ids) - keep_r :]
        if self.template == "chat":
            return p_ids + r_ids, [0] * (len(p_ids) + len(r_ids))
        if self.layout is not None:
            ids, types = self.layout.apply([p_ids, r_ids] if self.template == "pair" else [p_ids + r_ids])
        else:
            p, r = _tail(p, keep_p), _tail(r, keep_r)
            enc = (self.raw.post_process(p, r, add_special_tokens=True) if self.template == "pair"
                   else self.raw.post_process(Encoding.merge([p, r], growing_offsets=True), None, True))
            ids, types = enc.ids, enc.type_ids
        if self.template == "text":
            if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids = ids + [self.eos_id]
            types = [0] * len(ids)
        return ids, types
