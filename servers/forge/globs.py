"""Reservation patterns: globs over a repo's paths, what one covers, and whether two can overlap.

The semantics (git's `:(glob)` pathspecs, which are wildmatch-like):
- a pattern is relative to the repo's root and anchored there: `*.md` is the top level's Markdown
  files, `**/*.md` every Markdown file;
- `*` matches any characters but `/`, `?` one character but `/`, `[abc]`, `[a-z]`, `[!a-z]` (or
  `[^a-z]`) one character of (or not of) a set; `**` as a whole segment matches any number of
  directories, zero included (`src/**/test_*.py`), and only as a whole segment (`a**b` is refused);
- a pattern covers what it matches and everything under it: `src/api` and `src/*` cover
  `src/api/v1/x.py` (a reservation of a directory is one of all its files);
- matching is case-sensitive, as git's paths are; there is no escape character (`\\` is refused).

Whether two patterns overlap is decided exactly, not guessed: segment by segment (`**` absorbing
any number of the other's segments), each pair of segments by intersecting the two globs' languages
(a `*` absorbs whatever the other side produces). So `src/*.py` and `src/a*` overlap (on `src/a.py`)
where Agent Mail's fnmatch-each-way check says they do not, and `docs/*.md` and `src/**` do not.
The one approximation, on the safe side: a pattern covers the directory it names whether or not it
is one (`src/x.py` also covers a path `src/x.py/y` that git would never hold beside it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final


class BadPattern(ValueError):
    """Not a pattern the forge takes; the message says what to give instead. (Not a ToolError: the
    pre-receive hook imports this module and must not load the MCP stack; the tools turn it into one.)"""


MAX_PATTERN: Final = 256  # characters in one pattern
MAX_CLASS_CHARS: Final = 1024  # characters one pattern's [...] sets may expand to, in all
GLOBSTAR: Final = "**"

# A segment's token: a set of characters one path character must be in (or, negated, not in), or STAR.
STAR: Final = "*"


@dataclass(frozen=True, slots=True)
class CharSet:
    chars: frozenset[str]
    negated: bool  # True: any character but these (and never '/')

    def intersects(self, other: CharSet) -> bool:
        if self.negated and other.negated:
            return True  # two co-finite sets of an infinite alphabet always meet
        if self.negated:
            return bool(other.chars - self.chars)
        if other.negated:
            return bool(self.chars - other.chars)
        return bool(self.chars & other.chars)

    def has(self, char: str) -> bool:
        return (char in self.chars) != self.negated


ANY: Final = CharSet(frozenset(), negated=True)  # '?'
Token = CharSet | str  # CharSet or STAR
Segment = tuple[Token, ...] | str  # a segment's tokens, or GLOBSTAR


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str  # as given, without a trailing '/'
    segments: tuple[Segment, ...]  # ends with GLOBSTAR: a pattern covers everything under what it names
    regex: re.Pattern[str]

    def covers(self, path: str) -> bool:
        """Whether this pattern covers the file `path` (relative to the repo's root)."""
        return self.regex.fullmatch(path) is not None

    def overlaps(self, other: Pattern) -> bool:
        """Whether some path is covered by both."""
        return _segments_meet(self.segments, other.segments)


def parse(text: object) -> Pattern:
    """A reservation pattern, checked; BadPattern says what is wrong with it and what to give instead."""
    if not isinstance(text, str) or not text.strip():
        raise BadPattern(f"{text!r} is not a path pattern; give one relative to the repo's root, like 'src/api/**'")
    if len(text) > MAX_PATTERN:
        raise BadPattern(f"a path pattern is at most {MAX_PATTERN} characters; {text[:40]!r}… has {len(text)}")
    if any(ord(c) < 32 or c in "\x7f\\" for c in text):
        raise BadPattern(f"{text!r} holds a control character or '\\'; give a plain glob like 'src/*.py'")
    if text.startswith("/"):
        raise BadPattern(f"{text!r} is absolute; give a pattern relative to the repo's root, like 'src/api/**'")
    parts = text.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadPattern(f"{text!r} has an empty, '.' or '..' segment; give a pattern inside the repo, like 'src/**'")
    budget = [MAX_CLASS_CHARS]
    segments: list[Segment] = []
    for part in parts:
        if part == GLOBSTAR:
            if not segments or segments[-1] != GLOBSTAR:  # a/**/**/b is a/**/b
                segments.append(GLOBSTAR)
        elif "**" in part:
            raise BadPattern(f"{text!r}: '**' matches directories only as a whole segment ('src/**/x.py'); use '*'")
        else:
            segments.append(_tokens(part, text, budget))
    if segments[-1] != GLOBSTAR:
        segments.append(GLOBSTAR)
    return Pattern(text="/".join(parts), segments=tuple(segments), regex=re.compile(_regex(tuple(segments))))


def _tokens(part: str, text: str, budget: list[int]) -> tuple[Token, ...]:
    tokens: list[Token] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            if not tokens or tokens[-1] != STAR:  # '**' inside a segment was refused; 'a**' cannot occur
                tokens.append(STAR)
            i += 1
        elif char == "?":
            tokens.append(ANY)
            i += 1
        elif char == "[":
            charset, i = _charset(part, i, text, budget)
            tokens.append(charset)
        elif char == "]":
            raise BadPattern(f"{text!r} has a ']' without its '['; a set is written like '[a-z]'")
        else:
            tokens.append(CharSet(frozenset(char), negated=False))
            i += 1
    return tuple(tokens)


def _charset(part: str, start: int, text: str, budget: list[int]) -> tuple[CharSet, int]:
    """The set `[...]` starting at part[start]; returns it and the index after its ']'."""
    i = start + 1
    negated = i < len(part) and part[i] in "!^"
    if negated:
        i += 1
    chars: set[str] = set()
    first = True
    while i < len(part) and (part[i] != "]" or first):
        first = False
        low = part[i]
        if i + 2 < len(part) and part[i + 1] == "-" and part[i + 2] != "]":
            high = part[i + 2]
            if ord(high) < ord(low):
                raise BadPattern(f"{text!r}: the range {low}-{high} is backwards; write it low to high")
            budget[0] -= ord(high) - ord(low) + 1
            if budget[0] < 0:
                raise BadPattern(
                    f"{text!r}: its [...] sets are too large; keep them under {MAX_CLASS_CHARS} characters"
                )
            chars.update(chr(code) for code in range(ord(low), ord(high) + 1))
            i += 3
        else:
            chars.add(low)
            i += 1
    if i >= len(part):
        raise BadPattern(f"{text!r} has a '[' without its ']'; a set is written like '[a-z]'")
    chars.discard("/")
    return CharSet(frozenset(chars), negated), i + 1


def _regex(segments: tuple[Segment, ...]) -> str:
    out, slash = "", ""  # slash: what must come before the next segment ('/' once one was matched)
    for index, segment in enumerate(segments):
        if segment == GLOBSTAR and index == len(segments) - 1:
            out += f"(?:{slash}.*)?" if slash else ".*"  # this and everything under it
        elif segment == GLOBSTAR:
            out += slash + "(?:[^/]+/)*"  # zero or more whole directories
            slash = ""
        else:
            out += slash + "".join(_token_regex(token) for token in segment)
            slash = "/"
    return out


def _token_regex(token: Token) -> str:
    if token == STAR:
        return "[^/]*"
    assert isinstance(token, CharSet)
    if not token.chars:
        return "[^/]" if token.negated else "(?!)"
    body = "".join(re.escape(c) for c in sorted(token.chars))
    return f"[^/{body}]" if token.negated else f"[{body}]"


# ------------------------------------------------------------------------------------ overlap


def _segments_meet(a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
    # Segments: GLOBSTAR absorbs any run of whole segments; two plain segments must share a name.
    return _meet(a, b, GLOBSTAR, _names_meet)


def _names_meet(x: object, y: object) -> bool:
    assert isinstance(x, tuple) and isinstance(y, tuple)
    return _meet(x, y, STAR, _charsets_meet)


def _charsets_meet(x: object, y: object) -> bool:
    assert isinstance(x, CharSet) and isinstance(y, CharSet)
    return x.intersects(y)


def _meet(a: Sequence[object], b: Sequence[object], wild: str, meets: Callable[[object, object], bool]) -> bool:
    """Whether one sequence matches both patterns, where `wild` matches any run of elements (none too)
    and two other items must `meet` on one element. Exact: a wild item absorbs the other's items one by
    one (a wild one whole). The same rule on two levels: segments of a path, characters of a name (a
    name is never empty, but two names that meet only on the empty one are two lone '*'s, which also
    meet on any name)."""

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == wild and (meet(i + 1, j) or (j < len(b) and meet(i, j + 1))):
            return True
        if j < len(b) and b[j] == wild and (meet(i, j + 1) or (i < len(a) and meet(i + 1, j))):
            return True
        if i == len(a) or j == len(b) or a[i] == wild or b[j] == wild:
            return False
        return meets(a[i], b[j]) and meet(i + 1, j + 1)

    return meet(0, 0)
