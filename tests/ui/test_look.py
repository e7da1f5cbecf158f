"""Every utility class the pages name is defined somewhere: by Quasar, NiceGUI or our own CSS.

The dashboard runs without Tailwind (its in-browser compiler cost every page ~50 ms), so a class
such as `gap-5` or `sm:w-96` that neither Quasar nor ui/pages/look.py defines silently does nothing.
Our own `hh-*` names may be hooks for tests and scripts without a rule, so only other names are checked.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import nicegui

import hyperhive.ui.pages as pages

UI_DIR = Path(pages.__file__).parent.parent
STATIC = Path(nicegui.__file__).parent / "static"
SELECTOR_CLASS = re.compile(r"\.(-?[A-Za-z_][\w-]*)")
# .classes("…"), .classes(add="…"), .classes(replace=f"…"); class="…" and class='…' in markup
CLASSES_CALL = re.compile(r"""\.classes\(\s*(?:(?:add|replace|remove)=)?f?(["'])(.*?)\1""", re.S)
CLASS_ATTRIBUTE = re.compile(r"""(?<![:\w-])class=(["'])(.*?)\1""")
BOUND_CLASS = re.compile(r""":class="([^"]*)\"""")
QUOTED_NAME = re.compile(r"(?<!== )'([a-z][\w-]*)'")  # not the string a condition compares with
# values some pages put into a class at run time (a dict of colours, an f-string's part)
DYNAMIC_VALUES = re.compile(r"""["'](text-[a-z]+(?:-\d+)?)["']""")


def defined_classes() -> set[str]:
    """Class names that have a rule: Quasar's and NiceGUI's stylesheets and every *_CSS constant in ui/pages."""
    names: set[str] = set()
    for sheet in ("quasar.unimportant.css", "quasar.important.css", "nicegui.css"):
        names |= set(SELECTOR_CLASS.findall((STATIC / sheet).read_text()))
    for module_info in pkgutil.iter_modules(pages.__path__):
        module = importlib.import_module(f"{pages.__name__}.{module_info.name}")
        for attribute, value in vars(module).items():
            if attribute.endswith("_CSS") and isinstance(value, str):
                names |= set(SELECTOR_CLASS.findall(value))
    return names


def used_classes() -> dict[str, set[str]]:
    """Each class name the sources under ui/ name literally, with the files that name it."""
    used: dict[str, set[str]] = {}
    for path in sorted([*UI_DIR.rglob("*.py"), *UI_DIR.rglob("*.js")]):
        text = path.read_text()
        found: list[str] = []
        for match in CLASSES_CALL.finditer(text):
            found += match.group(2).split()
        for match in CLASS_ATTRIBUTE.finditer(text):
            found += match.group(2).split()
        for match in BOUND_CLASS.finditer(text):
            found += QUOTED_NAME.findall(match.group(1))
        found += DYNAMIC_VALUES.findall(text)
        for name in found:
            if "{" not in name and "}" not in name:  # an f-string's hole: its values are found above
                used.setdefault(name, set()).add(str(path.relative_to(UI_DIR)))
    return used


def test_the_checker_sees_the_pages_classes() -> None:
    used = used_classes()
    # a few names the pages certainly use, so the scan cannot silently find nothing
    for name in ("w-full", "items-center", "text-grey-5", "hh-swarm", "text-negative"):
        assert name in used, name
    assert {"w-full", "gap-2", "row", "items-center", "text-grey-5", "hh-stale"} <= defined_classes()


def test_every_utility_class_the_pages_use_is_defined() -> None:
    defined = defined_classes()
    undefined = {
        name: files for name, files in used_classes().items() if not name.startswith("hh-") and name not in defined
    }
    assert not undefined, f"classes no stylesheet defines (add them to UTILITY_CSS in ui/pages/look.py): {undefined}"
