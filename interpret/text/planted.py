"""The pieces with planted structure, written into an ``Emitter`` with one ``random.Random``.

Code-like blocks: 4-space indentation at levels 0..4, short and long lines, ``()[]{}`` nested up
to 6 deep and sometimes across lines, ``"..."`` and ``'...'`` strings, ``\"\"\"`` docstrings,
``#``, ``//`` and ``/* */`` comments. Prose-like paragraphs: sentences, capitals, contractions,
quoted phrases, parentheticals, URLs. The alphabet is printable ASCII plus ``\\n`` (under 100
characters) and the words come from short fixed lists, so a small LSTM picks the structure up
quickly. Each piece tells the emitter the state it writes in (``lstmscope.text.labels``).
"""

from __future__ import annotations

import random

from lstmscope.text.labels import IN_COMMENT, IN_DQUOTE, IN_SQUOTE, IN_URL, Emitter

MAX_DEPTH = 6  # total open brackets in code
MAX_INDENT = 4  # indentation levels 0..4


# --- word lists --------------------------------------------------------------------------------


def _split(words: str) -> tuple[str, ...]:
    return tuple(words.split())


_WORDS = _split(
    "the of and to in is was that for it with as his on be at by had not are but from or have "
    "an they which one you were her all she there would their we him been has when who will "
    "more no if out so said what up its about into than them can only other new some could "
    "time these two may then do first any my now such like our over man me even most made "
    "after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three small "
    "model cell memory text line quote bracket open close reads learns value number letter"
)
_PROPER = _split("London Paris Alice Bob Python Linux March Monday English Europe Tokyo Karpathy")
_CONTRACTIONS = _split("don't it's can't won't isn't we're they're I'm you'll that's didn't")
_IDENTS = _split(
    "x y i j n k data value result items count total name key node buf size index config "
    "path line text obj tmp left right max_len get_value num_steps cache state hidden acc"
)
_FUNCS = _split("foo compute parse load update render len range print append get sorted min max")
_CLASSES = _split("Parser Node Model Config Reader Cache Buffer Tree")
_OPS = ("+", "-", "*", "/", "%", "==", "!=", "<", ">", "<=", ">=", "and", "or")
_HOSTS = _split("example python github karpathy wiki docs news data arxiv mail")
_TLDS = (".com", ".org", ".net", ".io", ".edu")
_PATH = _split("index about docs blog lstm rnn cells paper 2015 code src v2 api users search")
_QUERY_KEYS = _split("q id page lang ref sort")

_CLOSER = {"(": ")", "[": "]", "{": "}"}


# --- pieces ------------------------------------------------------------------------------------


class Writer:
    """Writes code blocks and prose paragraphs into an ``Emitter`` with one ``random.Random``."""

    def __init__(self, rng: random.Random, em: Emitter) -> None:
        self.rng = rng
        self.em = em

    # -- small pieces --

    def url(self) -> str:
        r = self.rng
        for _ in range(50):
            u = r.choice(("http://", "https://", "https://"))
            u += ("www." if r.random() < 0.4 else "") + r.choice(_HOSTS) + r.choice(_TLDS)
            for _ in range(r.choice((0, 1, 1, 2, 2, 3))):
                seg = r.choice(_PATH)
                if r.random() < 0.3:
                    seg += r.choice("-_") + r.choice(_PATH)
                u += "/" + seg
            if r.random() < 0.15:
                u += r.choice((".html", "/"))
            if r.random() < 0.3:
                pairs = [
                    f"{r.choice(_QUERY_KEYS)}={r.choice(_PATH)}" for _ in range(r.randint(1, 2))
                ]
                u += "?" + "&".join(pairs)
            if r.random() < 0.1:
                u += "#" + r.choice(_PATH)
            # URLs end in a letter, digit or "/", so trailing punctuation is never part of one.
            if 20 <= len(u) <= 60:
                return u
        return "https://example.com/index"

    def emit_url(self) -> None:
        em = self.em
        flags = em.flags
        em.set_flags(flags | IN_URL)
        em.put(self.url())
        em.set_flags(flags)

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(n))

    def free_text(self, target: int, own_quote: str = "", url_p: float = 0.1) -> None:
        """Words and symbols inside a string or comment, about ``target`` characters.

        Never a line end or a backslash, never ``own_quote`` (it would end the string), never
        ``*`` (a ``*/`` would end a block comment). Brackets, ``#`` and the other quote may
        appear: they are plain text here, and the labels say so.
        """
        r, em = self.rng, self.em
        start = em.pos
        first = True
        while first or em.pos - start < target:
            if not first:
                em.put(" ")
            first = False
            x = r.random()
            if x < url_p:
                self.emit_url()
            elif x < 0.2:
                em.put(r.choice(_PROPER))
            elif x < 0.27:
                # A contraction's apostrophe would close a '...' string.
                em.put(r.choice(_CONTRACTIONS) if own_quote != "'" else r.choice(_WORDS))
            elif x < 0.3:
                em.put(r.choice(("(", "[", "{", ")", "]", "}", "#", "<", ">", ":")))
            elif x < 0.34:
                other = r.choice("\"'".replace(own_quote, "") if own_quote else "\"'")
                em.put(other + r.choice(_WORDS))
            elif x < 0.4:
                em.put(str(r.randint(0, 9999)))
            else:
                em.put(r.choice(_WORDS) + (r.choice(",.:;!?") if r.random() < 0.1 else ""))

    def string(self, quote: str | None = None) -> None:
        """A string literal in code (content 5-40 characters, sometimes longer with a URL)."""
        r, em = self.rng, self.em
        if quote is None:
            quote = '"' if r.random() < 0.6 else "'"
        if r.random() < 0.1:
            em.put(r.choice(("r", "b", "f", "rb")))  # the prefix is code, not string
        flags = em.flags
        em.set_flags(flags | (IN_DQUOTE if quote == '"' else IN_SQUOTE))
        em.put(quote)
        self.free_text(r.randint(5, 40), own_quote=quote, url_p=0.012)
        em.put(quote)
        em.set_flags(flags)

    def line_comment(self, marker: str = "#") -> None:
        em = self.em
        flags = em.flags
        em.set_flags(flags | IN_COMMENT)
        em.put(marker + " ")
        self.free_text(self.rng.randint(8, 60), url_p=0.025)
        em.set_flags(flags)

    def block_comment(self, level: int, inline: bool = False) -> None:
        """``/* ... */``: inline on one line, or over several lines ending with ``*/``."""
        r, em = self.rng, self.em
        flags = em.flags
        em.set_flags(flags | IN_COMMENT)
        if inline or r.random() < 0.4:
            em.put("/* ")
            self.free_text(r.randint(5, 40), url_p=0.03)
            em.put(" */")
        else:
            em.put("/*")
            for _ in range(r.randint(1, 4)):
                em.newline()
                em.start_line(level, extra=1)
                em.put("* ")
                self.free_text(r.randint(10, 60), url_p=0.025)
            em.newline()
            em.start_line(level, extra=1)
            em.put("*/")
        em.set_flags(flags)

    # -- code --

    def ident(self) -> str:
        r = self.rng
        name = r.choice(_IDENTS)
        if r.random() < 0.15:
            name = r.choice(("self", "obj", "node", "os")) + "." + name
        return name

    def number(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.6:
            return str(r.randint(0, 99))
        if x < 0.85:
            return str(r.randint(100, 99999))
        return f"{r.randint(0, 99)}.{r.randint(0, 999)}"

    def elements(self, level: int, n: int, dict_items: bool = False) -> None:
        """``n`` comma-separated items; long lines sometimes break after a comma."""
        r, em = self.rng, self.em
        for k in range(n):
            if k:
                em.put(",")
                if r.random() < (0.7 if em.column > 70 else 0.05):
                    em.newline()
                    em.start_line(min(level + 1, MAX_INDENT))
                else:
                    em.put(" ")
                if r.random() < 0.03:
                    self.block_comment(level, inline=True)
                    em.put(" ")
            if dict_items:
                if r.random() < 0.7:
                    self.string()
                else:
                    em.put(self.number())
                em.put(": ")
            self.expr(level, terms=1 if r.random() < 0.7 else 2)

    def bracketed(self, level: int) -> None:
        r, em = self.rng, self.em
        x = r.random()
        n = r.choice((1, 1, 2, 2, 3)) if em.total_depth < 3 else r.choice((1, 1, 2))
        if x < 0.35:  # call
            em.put(r.choice(_FUNCS))
            em.open("(")
            if r.random() > 0.1:
                self.elements(level, n)
            em.close(")")
        elif x < 0.55:  # list
            em.open("[")
            self.elements(level, n)
            em.close("]")
        elif x < 0.7:  # dict
            em.open("{")
            self.elements(level, n, dict_items=True)
            em.close("}")
        elif x < 0.85:  # parenthesised expression
            em.open("(")
            self.expr(level, terms=2)
            em.close(")")
        else:  # subscript
            em.put(self.ident())
            em.open("[")
            self.expr(level, terms=1)
            em.close("]")

    def term(self, level: int) -> None:
        r, em = self.rng, self.em
        d = em.total_depth
        # Fewer new brackets the deeper we are, so statements stay a few lines at most.
        if d < MAX_DEPTH and r.random() < 0.35 * (1 - d / (MAX_DEPTH + 1)) + 0.04:
            self.bracketed(level)
            return
        x = r.random()
        if x < 0.16:
            self.string()
        elif x < 0.7:
            em.put(self.ident())
        else:
            em.put(self.number())

    def expr(self, level: int, terms: int) -> None:
        em = self.em
        for k in range(terms):
            if k:
                em.put(f" {self.rng.choice(_OPS)} ")
            self.term(level)

    def multiline_literal(self, level: int) -> None:
        """``[`` / ``{`` then one item per line, the closer alone on the last line."""
        r, em = self.rng, self.em
        opener = r.choice("[{")
        em.open(opener)
        for _ in range(r.randint(2, 5)):
            em.newline()
            em.start_line(min(level + 1, MAX_INDENT))
            if opener == "{":
                self.string()
                em.put(": ")
            self.expr(level + 1, terms=1)
            em.put(",")
        em.newline()
        em.start_line(level)
        em.close(_CLOSER[opener])

    def simple_statement(self, level: int, in_def: bool) -> None:
        r, em = self.rng, self.em
        em.start_line(level)
        x = r.random()
        trailing = True
        if x < 0.11:
            self.line_comment("#")
            trailing = False
        elif x < 0.14:
            self.line_comment("//")
            trailing = False
        elif x < 0.19:
            self.block_comment(level)
            trailing = False
        elif x < 0.47:
            em.put(self.ident() + r.choice((" = ", " = ", " += ")))
            if r.random() < 0.08:
                self.multiline_literal(level)
            else:
                self.expr(level, terms=r.choice((1, 1, 2, 3)))
        elif x < 0.65:
            em.put(r.choice(_FUNCS))
            em.open("(")
            self.elements(level, r.choice((0, 1, 2, 3)))
            em.close(")")
        elif x < 0.75 and in_def:
            em.put("return ")
            self.expr(level, terms=r.choice((1, 2)))
        elif x < 0.82:
            em.put(r.choice(("pass", "break", "continue", "i += 1", "n = 0", "x = y")))
        else:  # a long line
            em.put(self.ident() + " = ")
            self.expr(level, terms=r.randint(4, 7))
        if trailing:
            y = r.random()
            if y < 0.15:
                em.put("  ")
                self.line_comment("#")
            elif y < 0.19:
                em.put("; ")  # after ";" a "//" is a comment, not floor division
                self.line_comment("//")
        em.newline()

    def docstring(self, level: int) -> None:
        r, em = self.rng, self.em
        em.start_line(level)
        em.set_flags(IN_DQUOTE)
        em.put('"""' + r.choice(_WORDS).capitalize() + " " + self.words(r.randint(2, 8)) + ".")
        if r.random() < 0.5:
            em.newline()
            em.newline()  # a blank line inside the docstring (indent 0, still in the string)
            for _ in range(r.randint(1, 3)):
                em.start_line(level)
                self.free_text(r.randint(20, 60), own_quote='"', url_p=0.04)
                em.newline()
            em.start_line(level)
        em.put('"""')
        em.set_flags(0)
        em.newline()

    def header(self, level: int, method: bool = False) -> bool:
        """A compound statement's first line; returns whether its body is a function body."""
        r, em = self.rng, self.em
        em.start_line(level)
        x = r.random()
        if method or x < 0.3:
            em.put("def " + r.choice(_FUNCS) + "_" + r.choice(_IDENTS))
            em.open("(")
            params = (["self"] if method else []) + r.sample(_IDENTS[:12], r.randint(0, 3))
            em.put(", ".join(params))
            em.close(")")
            em.put(":")
            em.newline()
            if r.random() < 0.3:
                self.docstring(level + 1)
            return True
        if x < 0.55:
            em.put("if ")
            self.expr(level, terms=r.choice((1, 2, 3)))
        elif x < 0.8:
            em.put(f"for {r.choice(_IDENTS)} in ")
            self.expr(level, terms=1)
        elif x < 0.9:
            em.put("while ")
            self.expr(level, terms=r.choice((1, 2)))
        else:
            em.put("with ")
            self.expr(level, terms=1)
            em.put(f" as {r.choice(_IDENTS)}")
        em.put(":")
        em.newline()
        return False

    def body(self, level: int, in_def: bool) -> None:
        r = self.rng
        for _ in range(r.randint(1, 4)):
            if level < MAX_INDENT and r.random() < 0.36 - 0.06 * level:
                fn = self.header(level)
                self.body(level + 1, in_def or fn)
            else:
                self.simple_statement(level, in_def)

    def code_block(self) -> None:
        r, em = self.rng, self.em
        x = r.random()
        if x < 0.2:
            em.put("class " + r.choice(_CLASSES))
            if r.random() < 0.5:
                em.open("(")
                em.put(r.choice(_CLASSES))
                em.close(")")
            em.put(":")
            em.newline()
            for _ in range(r.randint(1, 2)):
                self.header(1, method=True)
                self.body(2, True)
        elif x < 0.6:
            in_def = self.header(0)
            self.body(1, in_def)
        else:
            self.body(0, False)
        em.newline()  # blank line between blocks

    # -- prose --

    def sentence_units(self) -> list[list[tuple[str, str]]]:
        """A sentence as atomic units (never split across lines), each a list of pieces."""
        r = self.rng
        units: list[list[tuple[str, str]]] = []
        n = r.randint(4, 18)
        paren_at = r.randrange(n) if r.random() < 0.2 else -1
        paren_len = r.randint(1, 5)
        for k in range(n):
            x = r.random()
            if x < 0.007:
                unit = [("url", "")]
            elif x < 0.07:
                unit = [("dq", self.words(r.randint(1, 6)))]
            elif x < 0.08:
                unit = [("sq", self.words(r.randint(1, 4)))]
            elif x < 0.13:
                unit = [("t", r.choice(_CONTRACTIONS))]
            elif x < 0.2:
                unit = [("t", r.choice(_PROPER))]
            elif x < 0.23:
                unit = [("t", str(r.randint(1, 2024)))]
            else:
                unit = [("t", r.choice(_WORDS))]
            if k == 0:
                kind, s = unit[0]
                unit[0] = (kind, s[:1].upper() + s[1:]) if kind == "t" else unit[0]
            if k == paren_at:
                unit.insert(0, ("open", "("))
            if k == min(paren_at + paren_len, n - 1) and paren_at >= 0:
                unit.append(("close", ")"))
            if k == n - 1:
                unit.append(("t", r.choice(".....?!")))
            elif r.random() < 0.1:
                unit.append(("t", r.choice(",,,;:")))
            units.append(unit)
        return units

    def paragraph(self) -> None:
        r, em = self.rng, self.em
        width = r.randint(50, 100)
        em.start_line(0)
        for _ in range(r.randint(3, 8)):
            for unit in self.sentence_units():
                # Resolve URLs now so the unit's length is known before placing it.
                pieces = [(k, self.url() if k == "url" else s) for k, s in unit]
                length = sum(len(s) + (2 if k in ("dq", "sq") else 0) for k, s in pieces)
                if em.column > 0:
                    if em.column + 1 + length > width:
                        em.newline()
                    else:
                        em.put(" ")
                for kind, s in pieces:
                    if kind == "t":
                        em.put(s)
                    elif kind == "url":
                        em.set_flags(IN_URL)
                        em.put(s)
                        em.set_flags(0)
                    elif kind == "open":
                        em.open(s)
                    elif kind == "close":
                        em.close(s)
                    else:
                        quote = '"' if kind == "dq" else "'"
                        em.set_flags(IN_DQUOTE if kind == "dq" else IN_SQUOTE)
                        em.put(quote + s + quote)
                        em.set_flags(0)
        em.newline()
        em.newline()

    def filler(self, n: int) -> None:
        """Exactly ``n`` characters of plain words (base state), ending with a newline."""
        r, em = self.rng, self.em
        while n > 0:
            line = self.words(r.randint(3, 12))[: max(n - 1, 0)]
            em.put(line)
            em.newline()
            n -= len(line) + 1
