# The hive.toml that services.hyperhive's options make, before services.hyperhive.settings is
# merged over it. Plain builtins, no nixpkgs: the Python tests evaluate it, write it with
# hive-toml.nix and load it with hyperhive's own loader.
#
# cfg: the services.hyperhive options; nixpkgs: the host's nixpkgs source (pkgs.path).
{ cfg, nixpkgs }:
let
  servers = import ./servers.nix;
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  # hive.toml's [servers.NAME]; null values are left out (hive-toml.nix).
  listen =
    name:
    let
      l = cfg.listen.${name};
    in
    {
      inherit (l) host port socket;
      tls_cert = l.tlsCert;
      tls_key = l.tlsKey;
    };
in
{
  servers = genAttrs servers.all listen;
  broker.retention_days = cfg.retention.messageDays;
  # Read by the lifecycle server (root) at each agent start; null leaves it out.
  harness.env_file = if cfg.environmentFile == null then null else toString cfg.environmentFile;
  lifecycle = {
    backend = cfg.backend;
    log_keep = cfg.retention.logFiles;
    nixos = {
      flake = cfg.flake;
      # The agents' flakes use the host's nixpkgs: nothing to download, the same packages.
      nixpkgs = "path:${toString nixpkgs}";
    };
  };
  dashboard = {
    inherit (cfg.dashboard) host port;
    user = ""; # the unit runs it as services.hyperhive.user already
  };
  # Each unprivileged server keeps its database in a directory of its own (its StateDirectory),
  # apart from the lifecycle server's state/, which only root may write.
  storage.dirs = genAttrs servers.unprivileged (name: "${cfg.home}/db/${name}");
  # The shared stores on PostgreSQL (a hive across hosts); null leaves it out: sqlite.
  storage.url = cfg.storage.url;
  # This host among the hive's hosts; null values (and no labels) are left out: hyperhive's defaults.
  host = {
    inherit (cfg.host) name capacity;
    lifecycle_url = cfg.host.lifecycleUrl;
    labels = if cfg.host.labels == [ ] then null else cfg.host.labels;
    heartbeat_seconds = cfg.host.heartbeatSeconds;
    down_after_seconds = cfg.host.downAfterSeconds;
  };
  # The forge's repos, and its hooks beside them (forge-hooks), in its own StateDirectory too.
  forge.dir = "${cfg.home}/db/forge/repos";
}
