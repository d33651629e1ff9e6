"""Per-character features: hand-checked snippets, Python's own tokenizer as a reference on real
stdlib source, robustness on arbitrary text, and user features (regex, spans)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import token
import tokenize

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmscope.analysis.features import (
    FEATURES,
    Feature,
    FeatureError,
    compute,
    parse_feature_spec,
    regex_feature,
    span_feature,
)
from lstmscope.text.pattern import MAX_PATTERN_LEN


def marks(mask: str) -> list[bool]:
    """``"  ^^^ "`` -> [False, False, True, True, True, False]: expected arrays drawn under text."""
    return [c == "^" for c in mask]


def inside(text: str, *parts: str) -> list[bool]:
    """True on each of ``parts``, found in ``text`` in order; False elsewhere."""
    out = [False] * len(text)
    at = 0
    for part in parts:
        i = text.index(part, at)
        out[i : i + len(part)] = [True] * len(part)
        at = i + len(part)
    return out


def check(text: str, name: str, expected) -> None:
    got = compute(text, [name])[name]
    exp = marks(expected) if isinstance(expected, str) else expected
    assert len(exp) == len(text), f"expected array for {name} has the wrong length"
    assert got.tolist() == list(exp), f"{name} on {text!r}:\n got {got.astype(int).tolist()}"


# --- the registry ------------------------------------------------------------------------------


def test_registry_is_complete_and_well_formed():
    required = {
        "in_url", "in_dquote", "in_squote", "in_string", "in_comment", "depth_paren",
        "depth_square", "depth_curly", "depth_total", "indent", "column", "to_eol", "word_pos",
        "is_space", "is_letter", "is_digit", "is_upper", "is_punct", "is_newline",
    }  # fmt: skip
    assert required <= set(FEATURES)
    for name, feat in FEATURES.items():
        assert isinstance(feat, Feature) and feat.name == name
        assert feat.kind in ("binary", "graded") and feat.description
        arr = feat("x = (1)\n")
        assert arr.dtype == (np.bool_ if feat.kind == "binary" else np.int32)


def test_compute_matches_single_features_and_keeps_order():
    text = 'def f(a):\n    return "x" # c http://e.com\n'
    allf = compute(text)
    assert list(allf) == list(FEATURES)
    for name, feat in FEATURES.items():
        np.testing.assert_array_equal(allf[name], feat(text))
    sub = compute(text, ["column", "in_url"])
    assert list(sub) == ["column", "in_url"]


def test_compute_rejects_unknown_names_and_non_text():
    with pytest.raises(FeatureError, match="unknown feature 'nope'"):
        compute("abc", ["nope"])
    with pytest.raises(TypeError):
        compute(b"abc")  # type: ignore[arg-type]


# --- strings and comments on real-looking Python -----------------------------------------------


def test_triple_quoted_docstring_spans_lines_quotes_included():
    text = 'def f():\n    """Doc.\n\n    More."""\n    x = 1\n'
    doc = inside(text, '"""Doc.\n\n    More."""')
    check(text, "in_dquote", doc)
    check(text, "in_string", doc)
    check(text, "in_squote", inside(text))


def test_apostrophe_inside_a_double_quoted_string_does_not_end_it():
    text = "s = \"it's\" + 'a'"
    check(text, "in_dquote", inside(text, '"it\'s"'))
    check(text, "in_squote", inside(text, "'a'"))


def test_quotes_and_brackets_inside_a_comment_are_comment_only():
    text = 'x = (1)  # comment with "quote" (and [ brackets\ny = 2'
    check(text, "in_comment", inside(text, '# comment with "quote" (and [ brackets'))
    check(text, "in_string", inside(text))
    check(text, "depth_total", [0, 0, 0, 0, 1, 1, 1] + [0] * (len(text) - 7))


def test_hash_inside_a_string_is_not_a_comment():
    text = "a = '#no' # yes"
    check(text, "in_comment", inside(text, "# yes"))
    check(text, "in_squote", inside(text, "'#no'"))


def test_url_in_a_comment_is_both_url_and_comment():
    text = "# see https://docs.python.org/3/library/re.html#re.sub.\nx"
    check(text, "in_url", inside(text, "https://docs.python.org/3/library/re.html#re.sub"))
    check(text, "in_comment", inside(text, text.split("\n")[0]))


def test_url_rules_trailing_punctuation_quotes_and_brackets_end_it():
    # xhttp:// is not a URL (a letter before the scheme); a final "." is punctuation.
    text = 'see (http://a.io/x?q=1&r=2), "www.b.org/p" and xhttp://c.com. https://d.net/.'
    check(text, "in_url", inside(text, "http://a.io/x?q=1&r=2", "www.b.org/p", "https://d.net/"))


def test_url_in_code_is_skipped_so_its_hash_and_slashes_start_nothing():
    text = "see http://a.com/#top and more\n"
    check(text, "in_comment", inside(text))
    check(text, "in_url", inside(text, "http://a.com/#top"))


def test_prose_apostrophes_are_not_quotes_but_prefixed_strings_are():
    text = "don't stop, it's rb'raw' and 'q' 1990's"
    check(text, "in_squote", inside(text, "'raw'", "'q'"))


def test_escapes_and_unterminated_strings():
    # \" does not close; an unclosed "..." ends before the line end; a backslash-newline
    # continues the string onto the next line.
    text = 'a = "x\\"y" + "open\nb = "c\\\nd"'
    check(text, "in_dquote", inside(text, '"x\\"y"', '"open', '"c\\\nd"'))
    # An unclosed triple-quoted string or block comment runs to the end of the text.
    check('x = """a\nb', "in_dquote", inside('x = """a\nb', '"""a\nb'))
    check("x /* a\nb", "in_comment", inside("x /* a\nb", "/* a\nb"))


def test_block_comments_span_lines_and_contain_their_delimiters():
    text = "a = 1 /* one\n * two ( */ b(c)\n"
    check(text, "in_comment", inside(text, "/* one\n * two ( */"))
    check(text, "depth_paren", [0] * 26 + [1, 1, 1, 0])


def test_double_slash_comment_rules():
    # Line start, after ; { } -> comment; floor division after an operand -> code; inside an
    # open ( or [ (a Python continuation line) -> code.
    text = "// top\nx = a // b\ny = 1; // c\nz = (a\n  // b)\n"
    check(text, "in_comment", inside(text, "// top", "// c"))


def test_fstring_braces_do_not_count_as_brackets():
    text = 'f"{a[0]}" + g(x)'
    check(text, "in_dquote", inside(text, '"{a[0]}"'))
    check(text, "depth_total", [0] * 13 + [1, 1, 1])
    check(text, "depth_square", [0] * 16)


# --- brackets ---------------------------------------------------------------------------------


def test_depth_convention_opener_has_new_depth_closer_has_inner_depth():
    text = "f(x[1], {2})"
    check(text, "depth_total", [0, 1, 1, 2, 2, 2, 1, 1, 2, 2, 2, 1])
    check(text, "depth_paren", [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    check(text, "depth_square", [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    check(text, "depth_curly", [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0])


def test_unbalanced_closers_are_clipped_at_zero():
    check("))(a)", "depth_paren", [0, 0, 1, 1, 1])
    check("(]", "depth_total", [1, 1])  # total counts all kinds together
    check("(]", "depth_paren", [1, 1])  # the ] closes nothing round
    check("(]", "depth_square", [0, 0])


def test_brackets_in_strings_and_comments_do_not_count():
    text = "a = ('(' + \"[\") # {\nb"
    check(text, "depth_total", [0] * 4 + [1] * 11 + [0] * 6)


# --- lines ------------------------------------------------------------------------------------


def test_column_and_to_eol_with_lf_crlf_cr_and_no_final_newline():
    text = "ab\ncd\r\ne\rfg"
    check(text, "column", [0, 1, 2, 0, 1, 2, 2, 0, 1, 0, 1])
    check(text, "to_eol", [2, 1, 0, 2, 1, 0, 0, 1, 0, 2, 1])
    check(text, "is_newline", "  ^  ^^ ^  ")


def test_indent_levels_spaces_and_tabs():
    text = "a\n    b\n\tc\n  \t  d\n   e\n        \n"
    lines = text.split("\n")[:-1]
    levels = [0, 1, 1, 2, 0, 2]  # "  \t  " is 2+4+2=8 wide; "   " is 3 wide
    exp = [lv for line, lv in zip(lines, levels, strict=True) for _ in range(len(line) + 1)]
    check(text, "indent", exp)


def test_word_pos_and_character_classes():
    text = "Hi x_1, é2 ΣΩ 😀!"

    def at(*idx: int) -> list[bool]:
        return [i in idx for i in range(len(text))]

    check(text, "word_pos", [1, 2, 0, 1, 2, 3, 0, 0, 1, 2, 0, 1, 2, 0, 0, 0])
    check(text, "is_letter", at(0, 1, 3, 8, 11, 12))
    check(text, "is_digit", at(5, 9))
    check(text, "is_upper", at(0, 11, 12))
    check(text, "is_space", at(2, 7, 10, 13))
    check(text, "is_punct", at(4, 6, 14, 15))  # _ , 😀 ! (emoji are symbols, So)


# --- the reference: Python's own tokenizer on real stdlib code ---------------------------------

STDLIB = ["argparse", "textwrap", "tokenize", "dataclasses", "json.decoder", "email.utils"]


def tokenize_reference(text: str) -> dict[str, np.ndarray]:
    """in_string (prefix excluded), in_comment and depth_total from ``tokenize``."""
    starts = np.cumsum([0] + [len(line) + 1 for line in text.split("\n")])
    n = len(text)
    in_string = np.zeros(n, bool)
    in_comment = np.zeros(n, bool)
    opens = np.zeros(n, np.int64)
    closes = np.zeros(n, np.int64)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        a = starts[tok.start[0] - 1] + tok.start[1]
        b = starts[tok.end[0] - 1] + tok.end[1]
        if tok.type == token.STRING:
            quote = min(i for i in (tok.string.find('"'), tok.string.find("'")) if i >= 0)
            in_string[a + quote : b] = True
        elif tok.type == token.COMMENT:
            in_comment[a:b] = True
        elif tok.type == token.OP and tok.string in ("(", "[", "{"):
            opens[a] = 1
        elif tok.type == token.OP and tok.string in (")", "]", "}"):
            closes[a] = 1
    after = np.cumsum(opens - closes)
    before = np.concatenate(([0], after[:-1]))
    return {
        "in_string": in_string,
        "in_comment": in_comment,
        "depth_total": np.where(closes == 1, before, after),
    }


@pytest.mark.parametrize("module", STDLIB)
def test_strings_comments_and_depth_agree_with_python_tokenize(module):
    text = inspect.getsource(importlib.import_module(module))
    assert "\r" not in text
    ref = tokenize_reference(text)
    got = compute(text, list(ref))
    for name, expected in ref.items():
        bad = np.flatnonzero(got[name] != expected)
        assert len(bad) == 0, (
            f"{module} {name} differs at {bad[:5]}: {text[bad[0] - 40 : bad[0] + 20]!r}"
        )


# --- robustness -------------------------------------------------------------------------------

_interesting = st.sampled_from(
    [*"\"'#/*\\\n\r\t ()[]{}:.ahtpsw_9É😀\x00", "\ud800", "http://", "www.", '"""', "'''", "/*", "*/", "//", "\r\n"]
)  # fmt: skip
_texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=300),  # any code point, surrogates too
    st.lists(_interesting, max_size=120).map("".join),
)


def check_well_formed(text: str, out: dict[str, np.ndarray]) -> None:
    n = len(text)
    for name, arr in out.items():
        feat = FEATURES[name]
        assert arr.shape == (n,), name
        assert arr.dtype == (np.bool_ if feat.kind == "binary" else np.int32), name
        if feat.kind == "graded":
            assert np.isfinite(arr).all() and (arr >= 0).all(), name
    assert not (out["in_string"] & out["in_comment"]).any()
    assert not (out["in_dquote"] & out["in_squote"]).any()
    np.testing.assert_array_equal(out["in_string"], out["in_dquote"] | out["in_squote"])
    # Depth changes only at an opening bracket or just after a closing one.
    for k in ("depth_paren", "depth_square", "depth_curly", "depth_total"):
        for j in np.flatnonzero(np.diff(out[k]) != 0) + 1:
            assert text[j] in "([{" or text[j - 1] in ")]}", (k, j)
    content = ~out["is_newline"]
    lengths = out["column"] + out["to_eol"]
    # Within a line, column + to_eol is the line's content length.
    assert (np.diff(lengths)[content[1:] & content[:-1]] == 0).all()
    assert ((out["word_pos"] > 0) == np.array([c.isalnum() or c == "_" for c in text], bool)).all()


@settings(deadline=None, max_examples=200)
@given(_texts)
def test_every_feature_is_well_formed_on_arbitrary_text(text):
    out = compute(text)
    check_well_formed(text, out)


@pytest.mark.parametrize(
    "text",
    ["", "\x00", "\ud800\udfff\udc00", "a\r\nb\rc\n", "😀" * 10, "\r\r\n\n", '"\\', "'''\\"],
)
def test_edge_cases_do_not_crash(text):
    check_well_formed(text, compute(text))


@pytest.mark.timeout(60)  # a hang guard, not a speed test: speed lives in benchmarks/
def test_one_million_character_single_line():
    text = ('x = f(a, "b") # c http://d.org/e ' * 30_000)[:1_000_000]
    out = compute(text)
    assert out["column"][-1] == len(text) - 1 and out["to_eol"][0] == len(text)


@pytest.mark.timeout(60)
def test_compute_all_on_one_million_characters_of_python():
    text = "".join(inspect.getsource(importlib.import_module(m)) for m in STDLIB)
    text = (text * (1_000_000 // len(text) + 1))[:1_000_000]
    out = compute(text)
    assert all(len(v) == len(text) for v in out.values())


# --- user features ----------------------------------------------------------------------------


def test_regex_feature_marks_characters_inside_matches():
    text = "a TODO b FIXME c"
    got = regex_feature("todo", r"TODO|FIXME", text)
    assert got.dtype == np.bool_
    assert got.tolist() == marks("  ^^^^   ^^^^^  ")
    # Zero-width matches inside the text mark nothing.
    assert not regex_feature("b", r"\b", "ab cd").any()


@pytest.mark.timeout(30)  # without the regex timeout these would run for longer than the universe
def test_regex_feature_catastrophic_patterns_return_or_raise():
    with contextlib.suppress(FeatureError):  # either outcome is fine, as long as it ends
        regex_feature("cat", r"(a+)+$", "a" * 50 + "b", timeout=1.0)
    with pytest.raises(FeatureError, match="took over"):
        regex_feature("cat", r"(x+x+)+y", "x" * 5000, timeout=0.2)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a*", "matches the empty string"),
        ("", "empty pattern"),
        ("(unclosed", "bad regular expression"),
        ("a" * (MAX_PATTERN_LEN + 1), "limit is"),
    ],
)
def test_regex_feature_rejects_bad_patterns_clearly(pattern, message):
    with pytest.raises(FeatureError, match=message):
        regex_feature("f", pattern, "aaa")


def test_feature_error_is_a_value_error():
    assert issubclass(FeatureError, ValueError)


def test_parse_feature_spec_builds_a_binary_feature():
    feat = parse_feature_spec("todo=TODO|FIX=ME")
    assert feat.name == "todo" and feat.kind == "binary"
    assert feat("x FIX=ME").tolist() == marks("  ^^^^^^")
    out = compute("TODO", ["column"], extra=[feat])
    assert list(out) == ["column", "todo"] and out["todo"].all()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("noequals", "expected name=REGEX"),
        ("=abc", "bad feature name"),
        ("9x=abc", "bad feature name"),
        ("in_url=abc", "is built in"),
        ("x=a*", "matches the empty string"),
        ("x=(", "bad regular expression"),
    ],
)
def test_parse_feature_spec_rejects_bad_specs(spec, message):
    with pytest.raises(FeatureError, match=message):
        parse_feature_spec(spec)


def test_span_feature():
    assert span_feature(6, [(1, 3), (2, 4), (5, 5)]).tolist() == marks(" ^^^  ")
    assert span_feature(0, []).shape == (0,)
    for bad in ([(3, 2)], [(-1, 2)], [(0, 7)], [(1,)]):
        with pytest.raises(FeatureError):
            span_feature(6, bad)
