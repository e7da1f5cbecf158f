# hyperhive's four MCP servers, as module.nix and settings.nix both need them.
{
  # In start-up order: the broker first (the others post events to it).
  all = [
    "broker"
    "lifecycle"
    "approvals"
    "operator"
  ];
  # Run as the unprivileged user, each with a database directory of its own; the lifecycle
  # server is root's.
  unprivileged = [
    "broker"
    "approvals"
    "operator"
  ];
  # hyperhive's default TCP ports (servers/common/config.py's ServersSettings).
  ports = {
    broker = 7801;
    lifecycle = 7802;
    approvals = 7803;
    operator = 7804;
  };
}
