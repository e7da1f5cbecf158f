# hyperhive's MCP servers, as module.nix and settings.nix both need them: what
# servers/common/registry.py says of each (tests/unit/test_nix.py fails when the two disagree).
{
  # In start-up order: the broker first (the others post events to it).
  all = [
    "broker"
    "lifecycle"
    "approvals"
    "operator"
    "forge"
  ];
  # Run as the unprivileged user, each with a database directory of its own; the lifecycle
  # server is root's.
  unprivileged = [
    "broker"
    "approvals"
    "operator"
    "forge"
  ];
  # The servers that call another one with a service token the hive hands them (a systemd
  # credential); the lifecycle server mints its own.
  handedToken = [
    "approvals"
    "operator"
    "forge"
  ];
  # The servers whose store moves to PostgreSQL with services.hyperhive.storage.url (config.py's
  # SHARED_STORES); the others keep sqlite.
  sharedStore = [
    "broker"
    "approvals"
    "operator"
  ];
  # hyperhive's default TCP ports.
  ports = {
    broker = 7801;
    lifecycle = 7802;
    approvals = 7803;
    operator = 7804;
    forge = 7806;
  };
}
