"""Reading a pipe a child process writes to, on the event loop."""

from __future__ import annotations

import asyncio
import os


async def read_to_end(fd: int) -> bytes:
    """Everything written to the pipe `fd` until its writer closes it, without tying up a thread."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    closed: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            return
        if not closed.done():
            closed.set_result(None)  # read() returned b"": the writer closed it

    loop.add_reader(fd, readable)
    try:
        await closed
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
