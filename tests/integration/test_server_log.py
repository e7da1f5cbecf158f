"""What a server's log says about callers' mistakes: one calm line each, never a traceback."""

from __future__ import annotations

import socket
import time

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerProcess

pytestmark = pytest.mark.slow


def _log_after(process: BrokerProcess, mark: int, settle: float = 0.5) -> str:
    time.sleep(settle)  # the server writes its log line after the reply
    return process.stderr()[mark:]


def test_a_client_that_hangs_up_mid_body_is_one_line(broker_process: BrokerProcess) -> None:
    broker_process.start()
    port = broker_process.port
    mark = len(broker_process.stderr())
    token = broker_process.hive.token("operator")
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Length: 100000\r\n\r\n"
            + b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "send"'
        )
        time.sleep(0.3)
    log = _log_after(broker_process, mark, settle=1.0)
    assert "Traceback" not in log, log
    assert len(log.splitlines()) == 1 and "hung up before sending its whole request" in log, log


async def test_a_refused_argument_is_one_line(broker_process: BrokerProcess) -> None:
    broker_process.start()
    mark = len(broker_process.stderr())
    client = broker_process.endpoint().client("operator")
    try:
        with pytest.raises(ToolError, match="invalid arguments for thread: message_id"):
            await client.call("thread", {"message_id": -1})
        with pytest.raises(ToolError, match="unknown message"):
            await client.call("thread", {"message_id": 5})
    finally:
        await client.close()
    log = _log_after(broker_process, mark)
    assert "Traceback" not in log, log
    [line] = log.splitlines()  # the refused argument; the plain refusal is not the server's news
    assert "refused: invalid arguments for thread: message_id" in line, log
