"""Pieces of the tools' result models that every server shares."""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class CompactModel(BaseModel):
    """A frozen result whose null optional fields are left out: agents read these, and every key costs tokens."""

    model_config = ConfigDict(frozen=True)

    @model_serializer(mode="wrap")
    def _drop_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only optional fields: a required field that is null (recv's `message`) says something.
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in data.items() if v is not None or (k in fields and fields[k].is_required())}


# Ids as sqlite stores them (signed 64-bit, from 1): a larger or negative number is refused at
# the boundary with a clear message instead of overflowing in the database.
MAX_ID: Final = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Cursor = Annotated[int, Field(ge=0, le=MAX_ID, description="an id to continue after (0: from the start)")]
