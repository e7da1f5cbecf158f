"""Reservation patterns (servers/forge/globs.py): what a pattern covers, whether two overlap (checked
against a brute force over a universe of paths), and what is refused."""

from __future__ import annotations

import itertools
import random

import pytest

from hyperhive.servers.forge.globs import BadPattern, parse


@pytest.mark.parametrize(
    ("pattern", "covered", "not_covered"),
    [
        ("src/api/**", ["src/api/x.py", "src/api/v1/y.py"], ["src/apix", "src/x.py", "api/x.py"]),
        ("src/api", ["src/api", "src/api/x.py", "src/api/a/b/c"], ["src/apix/y", "src/ap"]),
        ("*.md", ["README.md", "x.md"], ["docs/x.md", "README.mdx"]),
        ("**/*.md", ["README.md", "docs/x.md", "a/b/c.md"], ["a/b/c.py"]),
        ("src/*", ["src/a", "src/a/b/c"], ["src", "lib/a"]),
        ("src/**/test_*.py", ["src/test_a.py", "src/a/b/test_b.py"], ["src/a/tests.py", "test_a.py"]),
        ("[a-c]?.txt", ["a1.txt", "cz.txt"], ["d1.txt", "a.txt", "a/1.txt"]),
        ("[!a-c]?.txt", ["d1.txt"], ["a1.txt"]),
        ("**", ["x", "a/b/c"], []),
        ("src/", ["src/x"], ["srcx"]),
    ],
)
def test_what_a_pattern_covers(pattern: str, covered: list[str], not_covered: list[str]) -> None:
    compiled = parse(pattern)
    for path in covered:
        assert compiled.covers(path), (pattern, path)
    for path in not_covered:
        assert not compiled.covers(path), (pattern, path)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("src/*.py", "src/a*", True),  # on src/a.py: fnmatch each way (Agent Mail's check) says no
        ("docs/*.md", "src/**", False),
        ("src/api", "src/api/v1/x.py", True),
        ("src/**", "src/api/x.py", True),
        ("*.md", "docs/x.md", False),
        ("**/*.md", "docs/x.md", True),
        ("*.py", "*.md", False),
        ("src/*/x.py", "src/a/*", True),
        ("src/a?c", "src/[!b]bc", True),
        ("src/a?c", "src/[!a]bc", False),
        ("src/[a-c]x", "src/[d-f]x", False),
        ("**/test_*.py", "src/**/*_test.py", True),  # src/test_x_test.py
        ("a/**/b", "a/c", True),  # a/c covers a/c/b
        ("a/**/b", "c/b", False),
        ("**", "anything/at/all", True),
    ],
)
def test_overlap(a: str, b: str, overlap: bool) -> None:
    assert parse(a).overlaps(parse(b)) is overlap
    assert parse(b).overlaps(parse(a)) is overlap


def test_overlap_agrees_with_a_brute_force() -> None:
    """Whenever some path of the universe is covered by both, overlaps says so (soundness, the safe side);
    and on this alphabet, whenever overlaps says so, such a path exists (it is not merely conservative)."""
    names = ["a", "b", "ab", "ba", "aa", "x.py", "a.py"]
    universe = ["/".join(p) for n in (1, 2, 3, 4) for p in itertools.product(names, repeat=n)]
    segments = ["a", "b", "*", "a*", "*a", "?", "[ab]", "[!a]", "*.py", "**"]
    rng = random.Random(15)
    for _ in range(400):
        a = "/".join(rng.choice(segments) for _ in range(rng.randint(1, 2)))
        b = "/".join(rng.choice(segments) for _ in range(rng.randint(1, 2)))
        pa, pb = parse(a), parse(b)
        witness = any(pa.covers(path) and pb.covers(path) for path in universe)
        assert pa.overlaps(pb) == witness, (a, b, witness)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../x", r"'\.\.' segment"),
        ("src/../../x", r"'\.\.' segment"),
        ("a//b", "empty"),
        ("./a", r"'\.'"),
        ("", "not a path pattern"),
        ("a" * 300, "at most 256"),
        ("src/a**", "whole segment"),
        ("src/[ab", "without its ']'"),
        ("src/ab]", "without its '\\['"),
        ("src/[z-a]", "backwards"),
        ("a\\*", "control character or"),
        ("a\nb", "control character"),
        ("[\x00-\U0010ffff]", "control character"),
        ("[a-\U0010ffff]", "too large"),
    ],
)
def test_bad_patterns_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(BadPattern, match=why):
        parse(pattern)
