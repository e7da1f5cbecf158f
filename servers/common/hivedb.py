"""The hive's own tables in PostgreSQL, for a hive that spans hosts (`[storage] url`): which hosts
there are and which agents live where, with what each is allowed to do.

Schema `hive` of the hive's database, two tables:
- `hosts`: one row per host, written by that host's lifecycle server alone (`register`, then a
  heartbeat every [host] heartbeat_seconds). `down_since` is set once, by whichever lifecycle server
  first sees the heartbeat [host] down_after_seconds late (`mark_down` is a conditional update: one
  winner, one `host_down` event), and cleared by the host's next heartbeat.
- `agents`: the agent directory. A row names the host an agent lives on (placed before it exists,
  so a name is taken once across the hive), its applied agent.toml (NULL until applied) and its live
  instance (NULL when it has none). Written only by the lifecycle server of the agent's host (an
  update naming another host changes nothing); read by every server's AgentRegistry in place of
  the home's `applied/` and `instances/`, which belong to one host. A trigger NOTIFYs
  `hyperhive_agents` with the agent's name at each change, so every process sees it within
  milliseconds.

Only the hive's servers hold the database's credentials: a sandbox never reaches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from hyperhive.servers.common.pg import Conn, PgDatabase

SCHEMA: Final = "hive"
AGENTS_CHANNEL: Final = "hyperhive_agents"

MIGRATIONS: Final = (
    """
    CREATE TABLE hosts (
        name text PRIMARY KEY,
        lifecycle_url text NOT NULL,
        tls_cert text,
        public_key text,
        labels text[] NOT NULL DEFAULT '{}',
        capacity integer NOT NULL,
        backend text NOT NULL,
        started_at timestamptz NOT NULL,
        seen_at timestamptz NOT NULL,
        down_since timestamptz
    );
    CREATE TABLE agents (
        name text PRIMARY KEY,
        host text NOT NULL REFERENCES hosts (name),
        config text,
        instance text,
        version bigint NOT NULL DEFAULT 1,
        changed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX agents_by_host ON agents (host);
    CREATE FUNCTION agents_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('hyperhive_agents', COALESCE(NEW.name, OLD.name));
        RETURN NULL;
    END $$;
    CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OR DELETE ON agents
        FOR EACH ROW EXECUTE FUNCTION agents_changed();
    """,
)


@dataclass(frozen=True, slots=True)
class HostRow:
    name: str
    lifecycle_url: str
    tls_cert: str | None  # the PEM certificate its lifecycle server's https is trusted by
    public_key: str | None  # its signing key's public JWK (keys.py: tokens its lifecycle server mints)
    labels: tuple[str, ...]
    capacity: int
    backend: str
    started_at: float
    seen_at: float
    down_since: float | None
    agents: int  # placed on it

    @property
    def up(self) -> bool:
        return self.down_since is None


@dataclass(frozen=True, slots=True)
class PlacedAgent:
    name: str
    host: str
    config: str | None  # its applied agent.toml; None until applied
    instance: str | None
    version: int  # grows with every change of the row


class NameTaken(Exception):
    """The name is placed on another host."""

    def __init__(self, name: str, host: str) -> None:
        super().__init__(f"{name} lives on host {host}")
        self.name = name
        self.host = host


class HiveDirectory:
    """The `hive` schema: hosts and where agents live (see the module docstring)."""

    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self.db = PgDatabase(url, SCHEMA, MIGRATIONS, pool_size=pool_size)

    async def __aenter__(self) -> HiveDirectory:
        await self.db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    # ------------------------------------------------------------------------------------- hosts
    async def register(
        self,
        name: str,
        *,
        lifecycle_url: str,
        tls_cert: str | None,
        public_key: str | None,
        labels: Sequence[str],
        capacity: int,
        backend: str,
    ) -> None:
        """This host is up with these settings (a restart updates them)."""
        await self.db.write_one(
            """INSERT INTO hosts (name, lifecycle_url, tls_cert, public_key, labels, capacity, backend,
                                  started_at, seen_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())
               ON CONFLICT (name) DO UPDATE SET lifecycle_url = EXCLUDED.lifecycle_url,
                   tls_cert = EXCLUDED.tls_cert, public_key = EXCLUDED.public_key, labels = EXCLUDED.labels,
                   capacity = EXCLUDED.capacity, backend = EXCLUDED.backend, started_at = now(), seen_at = now()
               RETURNING name""",
            (name, lifecycle_url, tls_cert, public_key, list(labels), capacity, backend),
        )

    async def heartbeat(self, name: str) -> float | None:
        """This host is alive; if it had been marked down, when that was (it is up again now)."""
        row = await self.db.write_one(
            """UPDATE hosts AS h SET seen_at = now(), down_since = NULL
               FROM (SELECT down_since FROM hosts WHERE name = %s FOR UPDATE) AS before
               WHERE h.name = %s RETURNING extract(epoch FROM before.down_since)::float8 AS was_down""",
            (name, name),
        )
        return None if row is None else row["was_down"]

    async def mark_down(self, down_after: float) -> list[str]:
        """Mark down every host whose heartbeat is `down_after` seconds late and was not down yet;
        the names this call marked (whichever process calls it first gets each host once)."""
        rows = await self.db.write_all(
            """UPDATE hosts SET down_since = now()
               WHERE down_since IS NULL AND seen_at < now() - make_interval(secs => %s)
               RETURNING name""",
            (down_after,),
        )
        return sorted(row["name"] for row in rows)

    async def hosts(self) -> list[HostRow]:
        rows = await self.db.fetch_all(
            """SELECT h.name, h.lifecycle_url, h.tls_cert, h.public_key, h.labels, h.capacity, h.backend,
                      extract(epoch FROM h.started_at)::float8 AS started_at,
                      extract(epoch FROM h.seen_at)::float8 AS seen_at,
                      extract(epoch FROM h.down_since)::float8 AS down_since,
                      (SELECT count(*) FROM agents a WHERE a.host = h.name)::integer AS agents
               FROM hosts h ORDER BY h.name"""
        )
        return [
            HostRow(
                name=row["name"],
                lifecycle_url=row["lifecycle_url"],
                tls_cert=row["tls_cert"],
                public_key=row["public_key"],
                labels=tuple(row["labels"]),
                capacity=row["capacity"],
                backend=row["backend"],
                started_at=row["started_at"],
                seen_at=row["seen_at"],
                down_since=row["down_since"],
                agents=row["agents"],
            )
            for row in rows
        ]

    # ------------------------------------------------------------------------------------ agents
    async def place(self, name: str, host: str) -> str:
        """Take `name` for `host` unless it is placed already; the host it is placed on."""
        row = await self.db.write_one(
            """WITH taken AS (INSERT INTO agents (name, host) VALUES (%s, %s)
                              ON CONFLICT (name) DO NOTHING RETURNING host)
               SELECT host FROM taken UNION ALL SELECT host FROM agents WHERE name = %s LIMIT 1""",
            (name, host, name),
        )
        assert row is not None  # inserted, or there already
        return str(row["host"])

    async def publish(self, host: str, name: str, config: str | None, instance: str | None) -> None:
        """Agent `name` of `host` has this applied config and live instance now. NameTaken if the
        name lives on another host."""

        async def run(conn: Conn) -> None:
            row = await (
                await conn.execute(
                    """INSERT INTO agents (name, host, config, instance) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, instance = EXCLUDED.instance,
                           version = agents.version + 1, changed_at = now()
                       WHERE agents.host = EXCLUDED.host
                         AND (agents.config, agents.instance) IS DISTINCT FROM (EXCLUDED.config, EXCLUDED.instance)
                       RETURNING host""",
                    (name, host, config, instance),
                )
            ).fetchone()
            if row is None:  # unchanged, or another host's
                owner = await (await conn.execute("SELECT host FROM agents WHERE name = %s", (name,))).fetchone()
                if owner is not None and owner["host"] != host:
                    raise NameTaken(name, owner["host"])

        await self.db.write(run)

    async def move(self, name: str, source: str, target: str) -> bool:
        """Agent `name` lives on `target` now, no longer on `source` (move_agent); False if it did not
        live on `source`."""
        row = await self.db.write_one(
            """UPDATE agents SET host = %s, instance = NULL, version = version + 1, changed_at = now()
               WHERE name = %s AND host = %s RETURNING name""",
            (target, name, source),
        )
        return row is not None

    async def unpublish(self, host: str, name: str) -> None:
        """Agent `name` of `host` is gone (destroyed): the name is free again."""
        await self.db.write_one("DELETE FROM agents WHERE name = %s AND host = %s RETURNING name", (name, host))

    async def agents(self, host: str | None = None) -> list[PlacedAgent]:
        """Every agent of the hive (or of `host`), by name."""
        where, params = ("WHERE host = %s", (host,)) if host else ("", ())
        rows = await self.db.fetch_all(
            f"SELECT name, host, config, instance, version FROM agents {where} ORDER BY name", params
        )
        return [PlacedAgent(r["name"], r["host"], r["config"], r["instance"], r["version"]) for r in rows]

    async def agent(self, name: str) -> PlacedAgent | None:
        r = await self.db.fetch_one("SELECT name, host, config, instance, version FROM agents WHERE name = %s", (name,))
        return None if r is None else PlacedAgent(r["name"], r["host"], r["config"], r["instance"], r["version"])

    def changes(self) -> AsyncIterator[tuple[str, str]]:
        """The names of changed agents as they change (pg.PgDatabase.listen: first ("", ""))."""
        return self.db.listen([AGENTS_CHANNEL])
