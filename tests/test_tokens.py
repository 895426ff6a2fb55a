"""Tokenization on the real bundled tokenizer."""

import json
from pathlib import Path

import pytest

from inference.errors import InputError
from inference.limits import MAX_TEXT_CHARS, MAX_TOKENIZE_TOKENS
from inference.tokens import tokenize, to_dict

EXAMPLES = json.loads((Path(__file__).parent.parent / "assets/examples/tokenizer.json").read_text())
ALL = {**EXAMPLES["parallel"], **EXAMPLES["other"]}


@pytest.mark.parametrize("language", list(ALL))
def test_round_trip_in_every_example_language(session, language):
    text = ALL[language]
    view = tokenize(session, text)
    assert session.tokenizer.decode(view.ids, skip_special_tokens=True) == text
    assert b"".join(view.token_bytes).decode("utf-8") == text  # the bytes are the real bytes
    assert len(view.pieces) == len(view.ids) == len(view.special) == len(view.offsets)


def test_ids_are_what_the_model_receives(session):
    text = "The capital of France is"
    assert tokenize(session, text).ids == session.tokenizer(text).input_ids


def test_chat_view_equals_the_chat_template(session):
    text = "What is the capital of France?"
    view = tokenize(session, text, chat=True)
    expected = session.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True
    )["input_ids"]
    assert view.ids == list(expected)
    assert "<|im_start|>" in view.text and view.text.endswith("<|im_start|>assistant\n")
    start, end = session.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    for i, flag in zip(view.ids, view.special):
        assert flag == (i in (start, end))
    assert sum(view.special) == 5  # system, user, assistant opened; system, user closed


def test_plain_text_has_no_special_tokens(session):
    assert not any(tokenize(session, "Hello world").special)


def test_readable_pieces_and_split_characters(session):
    view = tokenize(session, "a b\nc")
    assert "·b" in view.pieces and any("↵" in p for p in view.pieces)
    chinese = tokenize(session, "你好")
    assert any(chinese.partial)  # 你 is three UTF-8 bytes split over two tokens
    assert all(p.startswith("‹") for p, part in zip(chinese.pieces, chinese.partial) if part)


def test_cached_per_text(session):
    assert tokenize(session, "cache me") is tokenize(session, "cache me")
    assert tokenize(session, "cache me") is not tokenize(session, "cache me", chat=True)


@pytest.mark.parametrize("text", ["", "   \n", None])
def test_empty_text_is_refused(session, text):
    with pytest.raises(InputError, match="empty"):
        tokenize(session, text)


def test_caps(session):
    with pytest.raises(InputError, match=f"{MAX_TEXT_CHARS:,}"):
        tokenize(session, "x" * 200_000)
    with pytest.raises(InputError, match=f"{MAX_TOKENIZE_TOKENS:,}"):
        tokenize(session, "🤗 " * 5000)


def test_garbage_and_lone_surrogates_do_not_crash(session):
    view = tokenize(session, "\x00\x01\x02 bin\ufffd \ud800 end")
    assert view.num_tokens > 0
    assert json.dumps(to_dict(view))  # JSON-ready
