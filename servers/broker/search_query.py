"""search_messages' query language, one for both engines: parsed here, then written as an FTS5
MATCH expression (sqlite) or a tsquery (PostgreSQL), so a query means the same, and is refused with
the same words, whichever store runs it.

The language is FTS5's own, less its rarer parts:
    deploy staging        both words (AND between terms is implied)
    lunch OR staging      either; AND, OR and NOT in capitals; NOT binds first, then AND, then OR
    deploy NOT staging    the first without the second (NOT joins two terms, as in FTS5)
    "deploy failed"       the words side by side; "" inside quotes is one quote
    lun*                  a prefix (of the phrase's last word)
    sender:bob  body:x    one column; sender:(a OR b) for a group
    ( … )                 grouping
A word is a run of letters and digits; anything else outside quotes is refused (quote it). Words
match case- and accent-insensitively on both engines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from hyperhive.servers.broker.store import query_refusal

Column = Literal["body", "sender"]
COLUMNS: Final[tuple[Column, ...]] = ("body", "sender")
MAX_DEPTH: Final = 20  # nested parentheses a query may have
# FTS5's barewords: letters, digits, "_" and any non-ASCII character.
_BAREWORD = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")
_WORD = re.compile(r"[^\W_]+")  # what is indexed: runs of letters and digits (FTS5's unicode61)
_OPERATORS: Final = ("AND", "OR", "NOT")


@dataclass(frozen=True, slots=True)
class Term:
    words: tuple[str, ...]  # a phrase: these words side by side
    prefix: bool = False  # the last word is a prefix
    column: Column | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Without:
    kept: Node
    dropped: Node


Node = Term | AllOf | AnyOf | Without


@dataclass(frozen=True, slots=True)
class Query:
    text: str  # as the caller wrote it
    root: Node


class QueryError(Exception):
    """Why a query cannot be read; the caller gets it as a refusal with how to write one."""


def parse(text: str) -> Query:
    """The query in `text`; Refused (saying what was wrong and how to write it) if it is not one."""
    try:
        return Query(text, _Parser(_tokens(text)).query())
    except QueryError as e:
        raise query_refusal(text, str(e)) from None


# ----------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "phrase", "op", "(", ")", ":", "*"]
    text: str


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        char = text[at]
        if char.isspace():
            at += 1
        elif char in "():*":
            tokens.append(_Token(char, char))  # type: ignore[arg-type]
            at += 1
        elif char == '"':
            end, parts = at + 1, []
            while True:
                close = text.find('"', end)
                if close < 0:
                    raise QueryError("unterminated string")
                parts.append(text[end:close])
                if text.startswith('"', close + 1):  # "" is a quote inside the phrase
                    parts.append('"')
                    end = close + 2
                    continue
                at = close + 1
                break
            tokens.append(_Token("phrase", "".join(parts)))
        elif match := _BAREWORD.match(text, at):
            word = match.group()
            tokens.append(_Token("op" if word in _OPERATORS else "word", word))
            at = match.end()
        else:
            raise QueryError(f'syntax error near "{char}"')
    return tokens


# ----------------------------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent: or := and (OR and)*; and := not ([AND] not)*; not := unary (NOT unary)*;
    unary := [column :] primary; primary := ( or ) | (word | phrase) [*]."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def query(self) -> Node:
        if not self.tokens:
            raise QueryError("no words to look for")
        node = self._any_of(None)
        if self.at < len(self.tokens):
            raise QueryError(f'syntax error near "{self.tokens[self.at].text}"')
        return node

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _is_op(self, word: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "op" and token.text == word

    def _any_of(self, column: Column | None) -> Node:
        parts = [self._all_of(column)]
        while self._is_op("OR"):
            self.at += 1
            parts.append(self._all_of(column))
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def _all_of(self, column: Column | None) -> Node:
        parts = [self._without(column)]
        while (token := self._peek()) is not None and token.kind != ")" and not self._is_op("OR"):
            if self._is_op("AND"):
                self.at += 1
            parts.append(self._without(column))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def _without(self, column: Column | None) -> Node:
        node = self._unary(column)
        while self._is_op("NOT"):
            self.at += 1
            node = Without(node, self._unary(column))
        return node

    def _unary(self, column: Column | None) -> Node:
        token = self._peek()
        following = self.tokens[self.at + 1] if self.at + 1 < len(self.tokens) else None
        if token is not None and token.kind == "word" and following is not None and following.kind == ":":
            if token.text not in COLUMNS:
                raise QueryError(f"no such column: {token.text}")
            self.at += 2
            column = token.text  # a Column: checked above
        return self._primary(column)

    def _primary(self, column: Column | None) -> Node:
        token = self._peek()
        if token is None:
            raise QueryError("syntax error at the end of the query")
        if token.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"more than {MAX_DEPTH} nested parentheses")
            self.at += 1
            node = self._any_of(column)
            if (close := self._peek()) is None or close.kind != ")":
                raise QueryError('missing ")"')
            self.at += 1
            self.depth -= 1
            return node
        if token.kind not in ("word", "phrase"):
            raise QueryError(f'syntax error near "{token.text}"')
        self.at += 1
        words = tuple(_WORD.findall(token.text))
        if not words:
            raise QueryError(f"no words in {token.text!r}")
        prefix = (star := self._peek()) is not None and star.kind == "*"
        if prefix:
            self.at += 1
        return Term(words, prefix, column)


# ---------------------------------------------------------------------------------------- writers
def as_fts5(query: Query) -> str:
    """The query as an FTS5 MATCH expression (every word quoted: FTS5 reads nothing else in it)."""
    return _fts5(query.root)


def _fts5(node: Node) -> str:
    match node:
        case Term(words, prefix, column):
            phrase = '"' + " ".join(words) + '"' + (" *" if prefix else "")
            return f"{column} : {phrase}" if column else phrase
        case AllOf(parts):
            return "(" + " AND ".join(_fts5(part) for part in parts) + ")"
        case AnyOf(parts):
            return "(" + " OR ".join(_fts5(part) for part in parts) + ")"
        case Without(kept, dropped):
            return f"({_fts5(kept)} NOT {_fts5(dropped)})"


# The PostgreSQL store indexes the sender with weight A and the body with weight B.
_WEIGHTS: Final[dict[Column, str]] = {"sender": "A", "body": "B"}


def as_tsquery(query: Query) -> str:
    """The query as to_tsquery's input: each word a quoted lexeme the text search configuration
    then folds (case, accents) as it folded the messages."""
    return _tsquery(query.root)


def _tsquery(node: Node) -> str:
    match node:
        case Term(words, prefix, column):
            weight = _WEIGHTS[column] if column else ""
            lexemes = []
            for index, word in enumerate(words):  # letters and digits only (_WORD): nothing to escape
                marks = ("*" if prefix and index == len(words) - 1 else "") + weight
                lexemes.append(f"'{word}'" + (f":{marks}" if marks else ""))
            return "(" + " <-> ".join(lexemes) + ")"
        case AllOf(parts):
            return "(" + " & ".join(_tsquery(part) for part in parts) + ")"
        case AnyOf(parts):
            return "(" + " | ".join(_tsquery(part) for part in parts) + ")"
        case Without(kept, dropped):
            return f"({_tsquery(kept)} & !{_tsquery(dropped)})"
