"""What hive.toml and agent.toml share as files: strict models, reading TOML, environment names,
and ConfigError, which names the file, the field and the reason for every problem (callers print it
and never show a traceback)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ConfigError(Exception):
    """A config file that cannot be used. `str()` is one line per problem: file: field: reason."""

    def __init__(self, path: Path | str, problems: Iterable[tuple[str, str]]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__(
            "\n".join(
                f"{self.path}: {field}: {reason}" if field else f"{self.path}: {reason}"
                for field, reason in self.problems
            )
        )


# Every settings model's: an unknown setting is an error (a misspelt one is never silently ignored), and
# settings once read never change. (Each module has its own BaseModel subclass with it, not one shared
# base, so that ruff still sees pydantic models there and lets their fields default to [] and {}.)
STRICT: Final = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [("", f"invalid TOML: {e}")]) from None
    except OSError as e:
        raise ConfigError(path, [("", e.strerror or str(e))]) from None


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not ENV_NAME_RE.match(key):
            raise ValueError(f"{key!r} is not an environment variable name")
    return env


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(path, [_problem(err) for err in e.errors()]) from None


def _problem(err: Any) -> tuple[str, str]:
    field = ".".join(str(part) for part in err["loc"])
    reason: str = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        reason = "unknown setting (check the spelling)"
    return field, reason
