"""Message lists (``[{role, content}, ...]``): the roles they may hold and the prompt text they stand for.

Ingest renders a column of message lists in Arrow (:func:`rewardline.data.adapters.native.prompt_columns`);
``rewardline score``, ``rerank`` and the server meet rows one at a time and render each list with
:func:`render_one`, to the same text (``tests/data/test_render_one.py``), so that an encoder reward model reads
at serving time the text it was trained on (:func:`message_list`; :func:`check_prompt` refuses a malformed list).
Plain Python, no Arrow: the modeling stages import it without the adapters.
"""

from __future__ import annotations

import re
from typing import Any

from rewardline.errors import BadInput, json_type

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


def message_list(prompt: Any) -> tuple[str, list[dict] | None]:
    """A prompt given as text, or as a list of ``{role, content}`` messages."""
    if isinstance(prompt, list):
        messages = [{"role": m["role"].lower(), "content": m["content"]} for m in prompt]  # as ingest stores them
        return render_one(messages), messages  # the text ingest stores for these messages (train = serve)
    return str(prompt), None


#: What a prompt may be, in error messages.
PROMPT_EXPECTED = "a string or a list of {role, content} messages"
#: Why a prompt whose text is empty or whitespace only is refused: ingest quarantines such a record
#: (:func:`rewardline.data.schema.blank`), score, rerank, the pyfunc model and the server refuse the row.
EMPTY_PROMPT = "empty prompt text; expected a non-empty string"
_BLANK = re.compile(r"[\t\n\f\r ]*")  # RE2's \s, as schema.blank matches it


def blank_prompt(prompt: str | list[dict]) -> bool:
    """Whether the text a prompt stands for (:func:`message_list`) is empty or whitespace only."""
    return _BLANK.fullmatch(message_list(prompt)[0]) is not None


def unicode_problem(text: str) -> str | None:
    r"""Why ``text`` is not valid Unicode, or None: a lone surrogate (what a JSON ``"\ud800"`` escape without its
    pair decodes to), which tokenizers and UTF-8 writers refuse."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode (a lone surrogate \\u{ord(text[err.start]):04x} at character {err.start})"
    return None


def check_text(text: str, where: dict[str, Any], field: str) -> None:
    """:class:`BadInput` naming ``field`` when ``text`` is not valid Unicode (:func:`unicode_problem`)."""
    problem = unicode_problem(text)
    if problem is not None:
        raise BadInput(**where, field=field, detail=f"{problem}; expected text that UTF-8 can encode")


def check_prompt(prompt: Any, where: dict[str, Any]) -> None:
    """A prompt is text or a list of ``{"role": str, "content": str}`` messages, valid Unicode, standing for text
    that is not blank (:data:`EMPTY_PROMPT`) (:class:`BadInput` otherwise)."""
    if isinstance(prompt, str):
        check_text(prompt, where, "prompt")
        if blank_prompt(prompt):
            raise BadInput(**where, field="prompt", detail=EMPTY_PROMPT)
        return
    if not isinstance(prompt, list) or not prompt:
        raise BadInput(**where, field="prompt", expected=PROMPT_EXPECTED, got=json_type(prompt))
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise BadInput(**where, field=f"prompt[{i}]", expected="an object {role, content}", got=json_type(message))
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = json_type(message[key]) if key in message else "nothing (missing)"
                raise BadInput(**where, field=f"prompt[{i}].{key}", expected="a string", got=got)
        if message["role"].lower() not in MESSAGE_ROLES:
            raise BadInput(**where, field=f"prompt[{i}].role", expected=f"one of {', '.join(MESSAGE_ROLES)}",
                           got=repr(message["role"][:60]))
        check_text(message["content"], where, f"prompt[{i}].content")
    if blank_prompt(prompt):
        raise BadInput(**where, field="prompt", detail=EMPTY_PROMPT)
