"""The `hive` command: set up a hive home, run its servers, mint tokens, poke the broker.

The command group and what every command shares are in `base`; the commands, by topic, in
`keys` (init, token, rotate-key), `serving` (serve, up), `agents`, `hosts`, `decisions` (approvals and
questions), `messages`, `peers`, `repos` (the forge) and `reports` (stats, audit). Importing this
package registers them all on `main`.
"""

from __future__ import annotations

from hyperhive.servers.cli import agents, decisions, hosts, keys, messages, peers, reports, repos, serving
from hyperhive.servers.cli.base import SERVERS, main

__all__ = [
    "SERVERS",
    "agents",
    "decisions",
    "hosts",
    "keys",
    "main",
    "messages",
    "peers",
    "reports",
    "repos",
    "serving",
]
