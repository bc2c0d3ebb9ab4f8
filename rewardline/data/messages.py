"""Message lists (``[{role, content}, ...]``): the roles they may hold and the prompt text they stand for.

Ingest renders a column of message lists in Arrow (:func:`rewardline.data.adapters.native.prompt_columns`);
``rewardline score``, ``rerank`` and the server meet rows one at a time and render each list with
:func:`render_one`, to the same text (``tests/data/test_render_one.py``), so that an encoder reward model reads
at serving time the text it was trained on. Plain Python, no Arrow: the modeling stages import it without the
adapters.
"""

from __future__ import annotations

#: The roles a message may have, compared case-blind and stored in lower case: the ones chat templates know.
#: Ingest quarantines a record with another; score, rerank and the server refuse the row.
MESSAGE_ROLES = ("assistant", "system", "user")
#: The speaker labels of the hh-rlhf-style transcript a message list is rendered to.
ROLE_LABELS = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_one(messages: list[dict]) -> str:
    r"""The prompt text of one message list: the content of a lone user message, else the transcript
    ``"\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"`` (the turn to answer last)."""
    if len(messages) == 1 and messages[0]["role"].lower() == "user":
        return messages[0]["content"]
    turns = "".join(f"\n\n{ROLE_LABELS.get(m['role'].lower(), m['role'].lower().capitalize())}: {m['content']}"
                    for m in messages)
    return turns + "\n\nAssistant:"
