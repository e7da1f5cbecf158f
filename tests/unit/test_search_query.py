"""search_messages' query language (servers/broker/search_query.py): one parser for both engines,
written out as FTS5 (sqlite) and as a tsquery (PostgreSQL); what it refuses, it refuses with the
same words on both."""

from __future__ import annotations

import pytest

from hyperhive.servers.broker.search_query import as_fts5, as_tsquery, parse
from hyperhive.servers.common.errors import Refused


@pytest.mark.parametrize(
    ("query", "fts5", "tsquery"),
    [
        ("deploy", '"deploy"', "('deploy')"),
        ("deploy staging", '("deploy" AND "staging")', "(('deploy') & ('staging'))"),
        ("deploy AND staging", '("deploy" AND "staging")', "(('deploy') & ('staging'))"),
        ("lunch OR staging", '("lunch" OR "staging")', "(('lunch') | ('staging'))"),
        ("a b OR c", '(("a" AND "b") OR "c")', "((('a') & ('b')) | ('c'))"),
        ("a NOT b c", '(("a" NOT "b") AND "c")', "((('a') & !('b')) & ('c'))"),
        ('"deploy failed"', '"deploy failed"', "('deploy' <-> 'failed')"),
        ('"foo-bar"', '"foo bar"', "('foo' <-> 'bar')"),
        ("lun*", '"lun" *', "('lun':*)"),
        ('"big dep"*', '"big dep" *', "('big' <-> 'dep':*)"),
        ("sender:bob", 'sender : "bob"', "('bob':A)"),
        ("body:dep*", 'body : "dep" *', "('dep':*B)"),
        ("sender:(bob OR carol)", '(sender : "bob" OR sender : "carol")', "(('bob':A) | ('carol':A))"),
        ("(a OR b) c", '(("a" OR "b") AND "c")', "((('a') | ('b')) & ('c'))"),
        ("Déploy", '"Déploy"', "('Déploy')"),  # folded by the index's tokenizer and the configuration
        ('"say ""hi"""', '"say hi"', "('say' <-> 'hi')"),
        ("and or", '("and" AND "or")', "(('and') & ('or'))"),  # lower case: plain words
    ],
)
def test_a_query_reads_the_same_on_both_engines(query: str, fts5: str, tsquery: str) -> None:
    parsed = parse(query)
    assert as_fts5(parsed) == fts5
    assert as_tsquery(parsed) == tsquery


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("foo-bar", 'syntax error near "-"'),
        ("v1.2", 'syntax error near "."'),
        ('"unterminated', "unterminated string"),
        ("AND", 'syntax error near "AND"'),
        ("deploy OR", "syntax error at the end of the query"),
        ("NOT deploy", 'syntax error near "NOT"'),
        ("(deploy", 'missing ")"'),
        ("deploy)", 'syntax error near ")"'),
        ("nope:deploy", "no such column: nope"),
        ("sender:", "syntax error at the end of the query"),
        ("*", 'syntax error near "*"'),
        ('"--"', "no words in '--'"),
        ("(" * 21 + "a" + ")" * 21, "more than 20 nested parentheses"),
        ("", "no words to look for"),
    ],
)
def test_what_is_not_a_query_is_refused_with_how_to_write_one(query: str, error: str) -> None:
    with pytest.raises(Refused) as refused:
        parse(query)
    assert f"not a search query the broker can read ({error}): {query!r}" in str(refused.value)
    assert 'Put words with punctuation in double quotes ("foo-bar"' in str(refused.value)


def test_no_query_text_reaches_the_database_unquoted() -> None:
    """Whatever the caller writes, what reaches FTS5 or to_tsquery is quoted words of letters and
    digits and the language's own operators."""
    parsed = parse("""sender:"x' OR 1=1 --" AND "a:b" "c""d" """)
    assert as_fts5(parsed) == '(sender : "x OR 1 1" AND "a b" AND "c d")'
    assert as_tsquery(parsed) == "(('x':A <-> 'OR':A <-> '1':A <-> '1':A) & ('a' <-> 'b') & ('c' <-> 'd'))"
