"""The hive's servers, in one table: everything else that lists them derives from it.

An entry says what a server is: its name, the module `hive serve` runs, its default TCP port,
its tools and who holds each by default, the tools it calls on other servers (as its service
principal) and whether it is privileged. Read from it: the tool catalog and the service
principals (catalog.py), the reserved names (names.py), hive.toml's [servers] and its template
(config.py), `hive serve`/`hive up` (cli.py), the tokens handed to the services (issuer.py), the
ports a sandbox reaches (lifecycle/sandbox_network.py), the dashboard's clients (ui/hive_view.py).
nix/servers.nix is checked against it (tests/unit/test_nix.py). docs/architecture.md, "Adding a
server", has the steps.

It imports nothing of hyperhive's but access.py: names.py and the sandbox network keeper read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from hyperhive.servers.common.access import (
    AGENT,
    HARNESS,
    MANAGER_AND_OPERATOR,
    MANAGER_OPERATOR_AND_SERVICE,
    OPERATOR,
    OPERATOR_AND_SERVICE,
    SERVICE,
    ToolAccess,
)

MCP_PATH: Final = "/mcp"  # every server's MCP endpoint (clients need it without the serving stack)
GIT_PATH: Final = "/git"  # the forge's git over smart HTTP, beside its /mcp: /git/<repo>.git


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One hyperhive server."""

    name: str  # also its [servers.<name>] table, state/<name>.sqlite and `hive serve <name>`
    module: str  # the Python module whose create(config, credentials, **options) builds it
    port: int  # its default loopback TCP port
    tools: Mapping[str, ToolAccess]  # every tool it registers (a test checks), and who holds it by default
    # The tools it calls on other servers, per server, as the principal service:<name>; a service may
    # call nothing else, whatever its role would allow. Empty: it calls no other server.
    calls: Mapping[str, frozenset[str]] = field(default_factory=dict)
    root: bool = False  # runs as root (sandboxes, uids); every other server runs unprivileged
    # Holds the hive's private key and mints its own token (and agents'); the others are handed one.
    issues_tokens: bool = False


# In start-up order: the broker first (the others post events to it).
REGISTRY: Final[tuple[ServerSpec, ...]] = (
    ServerSpec(
        name="broker",
        module="hyperhive.servers.broker.server",
        port=7801,
        tools={
            "send": AGENT,
            "recv": AGENT,
            "recv_batch": AGENT,
            "ack": AGENT,
            "lease": AGENT,
            "pending_count": AGENT,
            "thread": AGENT,
            "remind": AGENT,
            "list_my_reminders": AGENT,
            "cancel_reminder": AGENT,
            "search_messages": AGENT,  # an agent finds only its own mail; the operator, everyone's
            "peek_inbox": OPERATOR,  # read the operator's inbox without taking it (agents have recv)
            "list_messages": OPERATOR_AND_SERVICE,
            "stats": OPERATOR_AND_SERVICE,
            "post_event": SERVICE,
        },
    ),
    ServerSpec(
        name="lifecycle",
        module="hyperhive.servers.lifecycle.server",
        port=7802,
        tools={
            "list_agents": MANAGER_OPERATOR_AND_SERVICE,
            "list_hosts": MANAGER_OPERATOR_AND_SERVICE,
            "move_agent": OPERATOR,
            "adopt_agent": SERVICE,
            "agent_status": MANAGER_OPERATOR_AND_SERVICE,
            "logs": MANAGER_OPERATOR_AND_SERVICE,
            "agent_config": MANAGER_OPERATOR_AND_SERVICE,
            "agent_stats": MANAGER_OPERATOR_AND_SERVICE,
            "swarm_stats": MANAGER_OPERATOR_AND_SERVICE,
            "create_agent": OPERATOR_AND_SERVICE,
            "start": OPERATOR_AND_SERVICE,
            "stop": OPERATOR_AND_SERVICE,
            "restart": OPERATOR_AND_SERVICE,
            "kill": OPERATOR_AND_SERVICE,
            "rebuild": OPERATOR_AND_SERVICE,
            "rebuild_stale": OPERATOR_AND_SERVICE,
            "destroy": OPERATOR_AND_SERVICE,
            "set_model": OPERATOR_AND_SERVICE,
            "cancel_turn": OPERATOR_AND_SERVICE,
            "reset_session": OPERATOR_AND_SERVICE,
            "apply_commit": SERVICE,
            "diff_commit": MANAGER_OPERATOR_AND_SERVICE,
            "create_draft": OPERATOR_AND_SERVICE,
            "read_state_file": OPERATOR,
            "list_state_dir": OPERATOR,
            "audit": OPERATOR,
            "record_turn": HARNESS,
            "budget_check": HARNESS,
            "set_budget": OPERATOR,
            "resume_agent": OPERATOR,
            "add_peer": OPERATOR,
            "remove_peer": OPERATOR,
            "shared_files": OPERATOR,
            "read_shared_file": OPERATOR,
            "terminal_open": OPERATOR,
            "terminal_io": OPERATOR,
            "terminal_resize": OPERATOR,
            "terminal_close": OPERATOR,
        },
        # A host's lifecycle server hands a moving agent to another host's (move_agent).
        calls={"broker": frozenset({"post_event"}), "lifecycle": frozenset({"adopt_agent"})},
        root=True,
        issues_tokens=True,
    ),
    ServerSpec(
        name="approvals",
        module="hyperhive.servers.approvals.server",
        port=7803,
        tools={
            "request_apply_commit": MANAGER_AND_OPERATOR,
            "request_spawn": MANAGER_AND_OPERATOR,
            "request_spawn_draft": MANAGER_AND_OPERATOR,
            "request_spawn_commit": MANAGER_AND_OPERATOR,
            "list_my_requests": MANAGER_AND_OPERATOR,
            "pending_approvals": OPERATOR,
            "approve": OPERATOR,
            "deny": OPERATOR,
            "approval_history": OPERATOR,
        },
        # Approvals cannot kill an agent; nobody but approvals applies a config.
        calls={
            "lifecycle": frozenset(
                {"diff_commit", "list_agents", "agent_config", "apply_commit", "create_agent", "create_draft"}
            ),
            "broker": frozenset({"post_event"}),
        },
    ),
    ServerSpec(
        name="operator",
        module="hyperhive.servers.operator.server",
        port=7804,
        tools={
            "ask_operator": MANAGER_AND_OPERATOR,
            "ask_agent": AGENT,
            "answer_question": AGENT,
            "list_my_asks": AGENT,
            "cancel_ask": AGENT,
            "pending_questions": OPERATOR,
            "answer": OPERATOR,
            "cancel_question": OPERATOR,
            "question_history": OPERATOR,
        },
        calls={"broker": frozenset({"post_event"})},
    ),
    ServerSpec(
        name="forge",
        module="hyperhive.servers.forge.server",
        port=7806,
        tools={
            "create_repo": AGENT,
            "grant": AGENT,
            "revoke": AGENT,
            "list_repos": AGENT,
            "repo_log": AGENT,
            "read_file": AGENT,
            "diff": AGENT,
            "watch": AGENT,
            "unwatch": AGENT,
            "reserve": AGENT,
            "release": AGENT,
            "reservations": AGENT,
            "tree": AGENT,
            "pushes": AGENT,
            "show_commit": AGENT,
        },
        # Pushes are helper events (repo_pushed) to a repo's owner and watchers.
        calls={"broker": frozenset({"post_event"})},
    ),
)

SERVER_NAMES: Final = tuple(spec.name for spec in REGISTRY)
_BY_NAME: Final = {spec.name: spec for spec in REGISTRY}


def server_spec(name: str) -> ServerSpec:
    """The entry of server `name`; KeyError names the servers there are."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no hyperhive server {name!r}: the servers are {', '.join(SERVER_NAMES)}") from None


def callers() -> tuple[ServerSpec, ...]:
    """The servers that call other servers, each as its own service principal."""
    return tuple(spec for spec in REGISTRY if spec.calls)
