"""Message lists (native ``messages``, TRL's conversational shapes, arena conversations) hold only the roles that
chat templates know: a message of another role quarantines its record, naming the message and the role."""

from __future__ import annotations

import json

from rewardline.data.adapters import read_file

EXPECTED = "expected one of assistant, system, user"


def reasons(records: list[dict], name: str) -> dict[int, tuple[str, str]]:
    result = read_file("\n".join(json.dumps(r) for r in records).encode(), name)
    assert len(set(result.ranked["origin_line"].to_pylist())) + result.quarantine.num_rows == len(records)
    return {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}


def test_native_messages_with_an_unknown_role_are_quarantined() -> None:
    """Was: accepted, and 'robot' rendered into the prompt as a 'Robot:' turn."""
    def record(*roles: str) -> dict:
        return {"messages": [{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)], "annotator_id": "a",
                "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 2}]}

    records = [record("system", "user"), record("system", "user", "robot", "user"), record("System", "User"),
               record("user", "Assistant", "user"), record("user", "assistant", "tool", "function", "user")]
    assert reasons(records, "msgs.jsonl") == {
        2: ("messages.role", f"messages[2].role: {EXPECTED}, got 'robot'"),
        5: ("messages.role", f"messages[2].role: {EXPECTED}, got 'tool'"),
    }


def test_trl_and_arena_conversations_with_an_unknown_role_are_quarantined() -> None:
    def trl(prompt_role: str, chosen_role: str) -> dict:
        return {"prompt": [{"role": prompt_role, "content": "hi"}], "chosen": [{"role": chosen_role, "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}]}

    assert reasons([trl("user", "assistant"), trl("robot", "assistant"), trl("user", "bot")], "trl.jsonl") == {
        2: ("prompt.role", f"prompt[0].role: {EXPECTED}, got 'robot'"),
        3: ("chosen.role", f"chosen[0].role: {EXPECTED}, got 'bot'"),
    }

    def battle(role: str) -> dict:
        conversation = [{"role": role, "content": "q"}, {"role": "assistant", "content": "a"}]
        other = [{"role": role, "content": "q"}, {"role": "assistant", "content": "b"}]
        return {"model_a": "m1", "model_b": "m2", "winner": "model_a", "judge": "j",
                "conversation_a": conversation, "conversation_b": other}

    assert reasons([battle("user"), battle("human")], "arena.jsonl") == {
        2: ("conversation_a.role", f"conversation_a[0].role: {EXPECTED}, got 'human'"),
    }


def test_roles_are_stored_in_lower_case_as_chat_templates_compare_them() -> None:
    """Roles are read case-blind; stored as given ('User'), a chat template's ``message['role'] == 'user'`` missed
    them. Stored (and scored) in lower case."""
    from rewardline.data.messages import message_list

    conversation = [{"role": "System", "content": "s"}, {"role": "USER", "content": "q"},
                    {"role": "Assistant", "content": "a"}, {"role": "user", "content": "q2"}]
    record = {"messages": conversation, "annotator_id": "a",
              "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 2}]}
    result = read_file(json.dumps(record).encode(), "caps.jsonl")
    stored = result.ranked["prompt_messages"].to_pylist()[0]
    assert [m["role"] for m in stored] == ["system", "user", "assistant", "user"]
    assert message_list(conversation)[1] == stored  # score gives a chat template the same messages
