"""The agent page's log: levels, where a poll's new lines start, and the level and search filter."""

from __future__ import annotations

from hyperhive.ui.logview import GAP, OVERLAP, LogBuffer, LogLine, line_level, new_lines, passes

HARNESS = "2026-11-21 15:30:00,123 alice hyperhive.harness"


def test_a_line_takes_the_level_its_prefix_names_and_a_traceback_the_line_before_it() -> None:
    assert line_level(f"{HARNESS} WARNING broker slow", "info") == "warning"
    assert line_level(f"{HARNESS} INFO the ERROR in a message is not the level", "info") == "info"
    assert line_level(f"{HARNESS} CRITICAL out of disk", "info") == "error"
    assert line_level("Traceback (most recent call last):", "error") == "error"
    assert line_level('  File "x.py", line 1, in <module>', "error") == "error"
    assert line_level("ValueError: bad", "error") == "error"
    assert line_level("[2026-11-21T15:30:00Z] hyperhive: sandbox ended (exit 1)", "error") == "info"
    assert line_level("plain output of a program", "error") == "info"


def test_new_lines_start_after_the_end_seen_before() -> None:
    assert new_lines([], ["a", "b"]) == (["a", "b"], False)
    assert new_lines(["a", "b"], ["a", "b", "c"]) == (["c"], False)
    assert new_lines(["a", "b"], ["b", "c", "d"]) == (["c", "d"], False)  # the window slid past "a"
    assert new_lines(["a", "b"], ["a", "b"]) == ([], False)
    assert new_lines(["a", "b"], []) == ([], False)
    # Nothing of the end seen is in the window: everything is new, and some may be missing.
    assert new_lines(["a", "b"], ["x", "y"]) == (["x", "y"], True)
    # A repeated line is only the end seen if the lines before it match too.
    assert new_lines(["a", "tick"], ["a", "tick", "b", "tick"]) == (["b", "tick"], False)


def test_the_buffer_keeps_the_newest_lines_and_marks_a_gap() -> None:
    log = LogBuffer(keep=5)
    first = log.add([f"{HARNESS} ERROR boom", "Traceback (most recent call last):", "x"])
    assert [line.level for line in first] == ["error", "error", "info"]
    assert [line.text for line in log.add([first[-1].text, "y"])] == ["y"]
    gap = log.add([f"z{n}" for n in range(OVERLAP + 5)])
    assert gap[0] == LogLine(GAP, "warning") and len(log.lines) == 5
    assert [line.text for line in log.lines][-1] == f"z{OVERLAP + 4}"


def test_a_level_and_a_search_filter_lines() -> None:
    error, info = LogLine("E: Disk full", "error"), LogLine("I: all good", "info")
    assert passes(error, "warning", "") and not passes(info, "warning", "")
    assert passes(info, "debug", "GOOD") and not passes(info, "debug", "disk")
    log = LogBuffer(keep=10)
    log.add([f"{HARNESS} ERROR disk full", f"{HARNESS} INFO disk ok", f"{HARNESS} INFO fine"])
    assert [line.text for line in log.matching("info", "disk")] == [
        f"{HARNESS} ERROR disk full",
        f"{HARNESS} INFO disk ok",
    ]
    assert [line.text for line in log.matching("error", "")] == [f"{HARNESS} ERROR disk full"]
