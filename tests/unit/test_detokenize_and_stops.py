from optascan.engine.detokenize import MAX_HELD_TOKENS, IncrementalDetokenizer
from optascan.engine.stops import StopMatcher
from optascan.testing.scripted import byte_tokens

TEXT = "café 日本語 🙂 ok"


def test_deltas_never_split_a_multibyte_character():
    ids, decode = byte_tokens(TEXT)
    detok = IncrementalDetokenizer(decode)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == TEXT
    assert all("\ufffd" not in d for d in deltas)
    # the emoji's four bytes come out as one delta, on its last byte
    assert "🙂" in deltas
    assert deltas.count("") >= 3 + 2 * 3  # é: 1 held byte, each CJK char 2, the emoji 3


def test_detokenization_work_is_linear_in_output_length():
    ids, decode = byte_tokens(TEXT * 200)
    decoded = []

    def counting_decode(token_ids):
        decoded.append(len(token_ids))
        return decode(token_ids)

    detok = IncrementalDetokenizer(counting_decode)
    for i in ids:
        detok.add(i)
    detok.flush()
    assert detok.text == TEXT * 200
    # two decodes per token over a window of at most (bytes per char + 1) tokens
    assert sum(decoded) <= 2 * 5 * len(ids)


def test_prompt_context_is_not_emitted():
    ids, decode = byte_tokens("Q: hi A: yes")
    detok = IncrementalDetokenizer(decode, context=ids[:8])
    out = "".join(detok.add(i) for i in ids[8:]) + detok.flush()
    assert out == " yes"  # the space after the context is kept; the context itself is not repeated


def test_flush_emits_a_genuinely_invalid_tail():
    detok = IncrementalDetokenizer(lambda t: bytes(t).decode("utf-8", errors="replace"))
    assert detok.add(ord("a")) == "a"
    assert detok.add(0xE6) == ""  # first byte of a 3-byte character that never completes
    assert detok.flush() == "\ufffd"


def test_stop_string_across_token_boundaries():
    m = StopMatcher(["STOP"])
    assert m.feed("Hello S") == ("Hello ", False)  # "S" may begin STOP: held back
    assert m.feed("T") == ("", False)
    assert m.feed("OP and more") == ("", True)
    assert m.matched == "STOP"
    assert m.feed("x") == ("", True)


def test_held_back_text_is_released_when_it_is_not_a_stop():
    m = StopMatcher(["</end>"])
    assert m.feed("a </e") == ("a ", False)
    assert m.feed("x") == ("</ex", False)
    assert m.feed("tail </") == ("tail ", False)
    assert m.flush() == "</"


def test_earliest_of_several_stops_wins_and_text_before_it_is_kept():
    m = StopMatcher(["world", "lo w"])
    assert m.feed("hello world") == ("hel", True)
    assert m.matched == "lo w"


def test_no_stops_passes_text_through():
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", False)
    assert m.flush() == ""


def test_an_invalid_sequence_that_never_completes_does_not_grow_the_window():
    decoded = []

    def decode(ids):
        decoded.append(len(ids))
        return bytes(ids).decode("utf-8", errors="replace")

    detok = IncrementalDetokenizer(decode)
    deltas = [detok.add(0x80) for _ in range(1000)]  # lone continuation bytes, as a random model emits
    assert "\ufffd" in "".join(deltas)
    assert max(decoded) <= 2 * (MAX_HELD_TOKENS + 1)  # bounded: the previous delta plus the held tokens
