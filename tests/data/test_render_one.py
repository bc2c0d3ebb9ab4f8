"""One message list rendered in Python (score, rerank, serve) is the text ingest stores for it (Arrow)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardline.data import schema as S
from rewardline.data.adapters.native import prompt_columns
from rewardline.data.messages import render_one

ROLE = st.sampled_from(["user", "assistant", "system", "User", "ASSISTANT", "System"])
MESSAGE = st.fixed_dictionaries({"role": ROLE, "content": st.text(max_size=20)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(MESSAGE, min_size=1, max_size=5), min_size=1, max_size=8))
def test_render_one_is_the_prompt_text_ingest_stores(message_lists: list[list[dict]]):
    stored, _ = prompt_columns(pa.nulls(len(message_lists), pa.string()), pa.array(message_lists, pa.list_(S.MESSAGE)))
    assert [render_one(m) for m in message_lists] == stored.to_pylist()


def test_a_lone_user_message_is_its_text_and_a_conversation_a_transcript():
    assert render_one([{"role": "user", "content": "hi"}]) == "hi"
    assert render_one([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]) == (
        "\n\nSystem: be brief\n\nHuman: hi\n\nAssistant:")
