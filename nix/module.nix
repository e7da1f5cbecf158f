# services.hyperhive: the five servers and the dashboard as systemd units, agents as nixos-containers.
#
# The lifecycle server runs as root (it builds and starts containers and hands each agent its own
# uid); the broker, approvals, operator and forge servers and the dashboard run as the unprivileged
# `hyperhive` user, hardened, each with its own database directory, verifying tokens with the
# public key and holding its own token, both systemd credentials (only root holds the private
# key: `hive` and the lifecycle server issue). All listen on loopback TCP (agents share the host network)
# and on unix sockets in /run/hyperhive (0600, in 0700 directories).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.hyperhive;
  inherit (lib) mkOption mkEnableOption types;

  hive = lib.getExe' cfg.package "hive";
  stateDirectory = lib.removePrefix "/var/lib/" cfg.home;
  servers = import ./servers.nix;
  serverNames = servers.all;
  inherit (servers) unprivileged ports;
  # The lifecycle server is root: its socket gets a directory of its own inside /run/hyperhive.
  defaultSocket = name: if name == "lifecycle" then "/run/hyperhive/lifecycle/lifecycle.sock" else "/run/hyperhive/${name}.sock";

  listenOptions = name: {
    host = mkOption {
      type = types.str;
      default = "127.0.0.1";
      description = "Address of the ${name} server's TCP port: loopback, or with tlsCert the name or address its certificate names (docs/scaling.md).";
    };
    port = mkOption {
      type = types.nullOr types.port;
      default = ports.${name};
      description = "TCP port of the ${name} server; null for the unix socket only (agents need the TCP ports of the servers their tools use).";
    };
    socket = mkOption {
      type = types.nullOr types.str;
      default = defaultSocket name;
      description = "Unix socket of the ${name} server (created 0600 in a 0700 directory); null for none.";
    };
    tlsCert = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/hyperhive/tls/hive.crt";
      description = ''
        PEM certificate of the ${name} server's TCP port, which then speaks TLS (needed for a host
        beyond loopback); every client trusts exactly it, so it must name `host`. Alone, without
        tlsKey: a host that only calls this server elsewhere, and trusts this certificate. The
        units admit loopback only (IPAddressAllow): addresses of other hosts need adding there.
      '';
    };
    tlsKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/hyperhive-tls.key";
      description = ''
        The certificate's private key, outside the Nix store and readable by root only (0600): an
        unprivileged server's unit gets it as a systemd credential (the lifecycle server is root).
      '';
    };
  };

  settings = lib.recursiveUpdate (import ./settings.nix {
    inherit cfg;
    # The host's nixpkgs as a flake: nixosSystem records its source (and the registry entry it
    # makes keeps it from garbage collection); pkgs.path where it does not.
    nixpkgs = if (config.nixpkgs.flake.source or null) != null then config.nixpkgs.flake.source else pkgs.path;
  }) cfg.settings;

  hiveToml = pkgs.writeText "hive.toml" (import ./hive-toml.nix settings);

  # What every unprivileged unit gets: its own user, read-only everything but its own state,
  # loopback networking only, no privileges to gain.
  hardening = {
    User = cfg.user;
    Group = cfg.group;
    UMask = "0077";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateUsers = true;
    ProtectHostname = true;
    ProtectClock = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    RemoveIPC = true;
    CapabilityBoundingSet = "";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    IPAddressAllow = [ "localhost" ];
    IPAddressDeny = "any";
    ReadWritePaths = [ "/run/hyperhive" ];
    # Python's ctypes (cffi callbacks) and uvloop need writable+executable pages now and then:
    # MemoryDenyWriteExecute stays off.
  };

  # A server of a hive on PostgreSQL (services.hyperhive.storage): it may reach the database's
  # addresses, and reads the password file as a credential (libpq's PGPASSFILE). Every server is:
  # the shared stores live there (servers.sharedStore), and every server reads the hive's agent
  # directory there (servers/common/hivedb.py), the lifecycle server writing its host's part.
  onPostgresql = name: cfg.storage.url != null;

  serverUnit = name: {
    description = "hyperhive ${name} server";
    wantedBy = [ "multi-user.target" ];
    requires = [ "hyperhive-init.service" ];
    after = [
      "hyperhive-init.service"
      "network.target"
    ]
    ++ lib.optional (name != "broker") "hyperhive-broker.service";
    environment = {
      HIVE_HOME = cfg.home;
    }
    // lib.optionalAttrs (onPostgresql name && cfg.storage.passFile != null) {
      PGPASSFILE = "/run/credentials/hyperhive-${name}.service/pgpass";
    };
    # The forge runs git (http-backend, receive-pack and its hooks): git on its PATH whatever the
    # package's wrapper says. Its repos and hooks are in its StateDirectory (settings.nix's forge.dir).
    path = lib.optional (name == "forge") pkgs.git;
    restartTriggers = [ hiveToml ]; # hive.toml is a symlink in the home: the unit itself does not change
    serviceConfig = hardening // {
      IPAddressAllow = hardening.IPAddressAllow ++ lib.optionals (onPostgresql name) cfg.storage.allowedAddresses;
      Type = "notify";
      ExecStart = "${hive} serve ${name}";
      Restart = "on-failure";
      RestartSec = 2;
      StateDirectory = "${stateDirectory}/db/${name}";
      StateDirectoryMode = "0700";
      # The public key to verify callers with; a service's own token (the issuer renews it).
      LoadCredential = [
        "signing.pub:${cfg.home}/signing.pub"
      ]
      ++ lib.optional (lib.elem name servers.handedToken) "service.token:${cfg.home}/tokens/service-${name}.token"
      ++ lib.optional (onPostgresql name && cfg.storage.passFile != null) "pgpass:${toString cfg.storage.passFile}"
      # The key of its TLS port, a root-only file: `hive serve` reads this copy (systemd.py TLS_KEY_CREDENTIAL).
      ++ lib.optional (cfg.listen.${name}.tlsKey != null) "tls.key:${cfg.listen.${name}.tlsKey}";
    };
  };
in
{
  options.services.hyperhive = {
    enable = mkEnableOption "hyperhive, a swarm of Claude Code agents whose every capability is an MCP tool server";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The hyperhive package (hyperhive's flake sets its own packages.default).";
    };

    flake = mkOption {
      type = types.str;
      default = "hyperhive";
      example = "github:example/hyperhive?dir=nix";
      description = ''
        Flake reference of hyperhive's flake, which each agent's generated flake extends
        (nixosConfigurations.agent-base / manager). hyperhive's nixosModules.default sets it to
        the flake it came from, so the agents run the hyperhive the host runs; the default is a
        flake registry name.
      '';
    };

    home = mkOption {
      type = types.strMatching "/var/lib/[^/].*";
      default = "/var/lib/hyperhive";
      description = "The hive home: settings, secret, databases, agent configs and agents' files. Under /var/lib: the units use StateDirectory.";
    };

    user = mkOption {
      type = types.str;
      default = "hyperhive";
      description = "The unprivileged user of the broker, approvals, operator and forge servers and the dashboard.";
    };

    group = mkOption {
      type = types.str;
      default = "hyperhive";
      description = "Its group; it may read the applied agent configs (the servers enforce their allow-lists).";
    };

    backend = mkOption {
      type = types.enum [
        "nixos-container"
        "bwrap"
      ];
      default = "nixos-container";
      description = "How agents are sandboxed: a nixos-container each, or bubblewrap as on any Linux.";
    };

    listen = lib.genAttrs serverNames (name: listenOptions name);

    dashboard = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run the operator dashboard (NiceGUI), as services.hyperhive.user.";
      };
      host = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Loopback address of the dashboard; reach it from elsewhere through an SSH tunnel or a reverse proxy.";
      };
      port = mkOption {
        type = types.port;
        default = 7805;
        description = "The dashboard's port.";
      };
    };

    operatorSecretFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/hyperhive-operator";
      description = ''
        A file holding the operator's dashboard password (e.g. from agenix or sops-nix), handed
        to the dashboard as a systemd credential. null: the password `hive init` generated in
        ''${home}/dashboard.password.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/hyperhive.env";
      description = ''
        A file of NAME=value lines every agent's Claude Code gets, e.g. ANTHROPIC_API_KEY=sk-ant-…,
        kept out of the world-readable Nix store (agenix, sops-nix). The lifecycle server reads it
        at each agent start; agent.toml's [env] wins over it.
      '';
    };

    retention = {
      messageDays = mkOption {
        type = types.numbers.positive;
        default = 30;
        description = "Delivered broker messages older than this many days are deleted.";
      };
      logFiles = mkOption {
        type = types.ints.between 1 100;
        default = 3;
        description = "Rotated log files kept per agent (bwrap backend; nixos-containers log to the journal).";
      };
    };

    storage = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgresql://hive@db.internal/hive";
        description = ''
          A PostgreSQL database for the stores the hive shares across processes and hosts (the
          broker's, the approvals' and the operator's, a schema each), as [storage] url in hive.toml; null keeps
          every store in sqlite. The role needs to own the database (the broker creates the
          unaccent extension, a trusted one). No password here: the Nix store is world-readable;
          use passFile. docs/scaling.md says when and how.
        '';
      };
      passFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/hyperhive-pgpass";
        description = ''
          A libpq password file (host:port:database:user:password lines), outside the Nix store:
          given to the servers on PostgreSQL as a systemd credential (their PGPASSFILE).
        '';
      };
      allowedAddresses = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10.0.0.5" ];
        description = ''
          The database's addresses (IPAddressAllow) when it is not on this host: the servers'
          units reach nothing but loopback otherwise.
        '';
      };
    };

    # This host, in a hive across hosts (storage.url set): hive.toml's [host]. null leaves a
    # setting out, for hyperhive's default (servers/common/config.py HostSettings).
    host = {
      name = mkOption {
        type = types.nullOr (types.strMatching "[a-z][a-z0-9-]{0,30}");
        default = null;
        example = "gpu1";
        description = "This host's name, unique in the hive (agents are placed on hosts by name); null: `local`.";
      };
      lifecycleUrl = mkOption {
        type = types.nullOr (types.strMatching "https?://[^/[:space:]]+(/.*)?");
        default = null;
        example = "https://gpu1.example.com:7802/mcp";
        description = ''
          Where the other hosts' lifecycle servers reach this one (relayed calls, merged lists);
          beyond loopback it is https, with listen.lifecycle.tlsCert and tlsKey. null: the
          lifecycle server's own address, which is loopback: a hive of this host alone.
        '';
      };
      labels = mkOption {
        type = types.listOf (types.strMatching "[a-z0-9][a-z0-9_.-]{0,39}");
        default = [ ];
        example = [ "gpu" ];
        description = "What this host offers: an agent.toml's [placement] labels must all be among them.";
      };
      capacity = mkOption {
        type = types.nullOr (types.ints.between 0 100000);
        default = null;
        example = 20;
        description = "Agents placed on this host at most (0: no new ones); null: 100.";
      };
      heartbeatSeconds = mkOption {
        type = types.nullOr (types.numbers.between 0.2 600);
        default = null;
        example = 5;
        description = "How often this host's lifecycle server tells the hive it is alive; null: 5.";
      };
      downAfterSeconds = mkOption {
        type = types.nullOr (types.numbers.between 0.5 86400);
        default = null;
        example = 15;
        description = ''
          A host whose heartbeat is this late is marked down: its agents show as unreachable and
          the manager hears of it. At least twice heartbeatSeconds; null: 15.
        '';
      };
    };

    settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = {
        harness.batch_max = 5;
        questions.default_ttl_seconds = 3600;
      };
      description = ''
        More hive.toml settings, merged over the ones the options above make. The file lands in
        the world-readable Nix store: API keys go in environmentFile, not here.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      description = "hyperhive servers and dashboard";
    };
    users.groups.${cfg.group} = { };

    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];
    environment.systemPackages = [ cfg.package ];
    # `hive` as root on the host finds the home without --home, through sudo too.
    environment.variables.HIVE_HOME = cfg.home;
    security.sudo.extraConfig = lib.mkIf config.security.sudo.enable ''
      Defaults env_keep += "HIVE_HOME"
    '';

    systemd.timers.hyperhive-tokens = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = "daily";
        Persistent = true;
      };
    };

    systemd.tmpfiles.rules = [
      "d /run/hyperhive 0700 ${cfg.user} ${cfg.group} -"
      "d /run/hyperhive/lifecycle 0700 root root -"
    ];

    systemd.services = {
      # The home, its settings and secret, the manager's config: `hive init` adds what is missing.
      hyperhive-init = {
        description = "hyperhive: set up the hive home";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          StateDirectory = stateDirectory;
          StateDirectoryMode = "0711";
        };
        script = ''
          ln -sfn ${hiveToml} ${cfg.home}/hive.toml
          ${hive} init --home ${cfg.home}
          # The unprivileged servers read the applied agent configs (their allow-lists) and the
          # agents' live instances (a token of an ended one is refused); nothing else.
          chgrp ${cfg.group} ${cfg.home}/applied ${cfg.home}/instances
          chmod 0750 ${cfg.home}/applied ${cfg.home}/instances
        '';
      };

      # The servers' and the dashboard's tokens live [tokens] ttl_seconds; `hive init` re-issues
      # those past half their life, and the units holding one are restarted to read it.
      hyperhive-tokens = {
        description = "hyperhive: renew the servers' and the dashboard's tokens";
        requires = [ "hyperhive-init.service" ];
        after = [ "hyperhive-init.service" ];
        serviceConfig.Type = "oneshot";
        path = [ config.systemd.package ];
        script = ''
          renewed=$(${hive} init --home ${cfg.home} | sed -n 's|^  created tokens/\(.*\)\.token$|\1|p')
          for name in $renewed; do
            systemctl try-restart "hyperhive-''${name#service-}.service"
          done
        '';
      };

      hyperhive-lifecycle = {
        description = "hyperhive lifecycle server (agents' sandboxes)";
        wantedBy = [ "multi-user.target" ];
        requires = [ "hyperhive-init.service" ];
        after = [
          "hyperhive-init.service"
          "hyperhive-broker.service"
          "network.target"
        ];
        path = [
          pkgs.nixos-container
          config.nix.package
          pkgs.git
          config.systemd.package
          pkgs.bubblewrap
          pkgs.passt # pasta: a bubblewrap sandbox's outbound network ([sandbox] network)
          pkgs.util-linux
        ];
        environment.HIVE_HOME = cfg.home;
        restartTriggers = [ hiveToml ];
        # Root, and little hardening: it builds containers, runs nix and systemd-nspawn, chowns
        # agents' files to their uids. Containers are units of their own: they outlive a restart.
        serviceConfig = {
          Type = "notify";
          ExecStart = "${hive} serve lifecycle";
          Restart = "on-failure";
          RestartSec = 2;
          # Ready once the agents that should run are started; a first start builds their containers.
          TimeoutStartSec = "30min";
          # Only the server: bwrap sandboxes live in its cgroup and outlive a restart of it, as
          # containers do (it re-attaches to both).
          KillMode = "process";
          NoNewPrivileges = true;
          PrivateTmp = true;
          ProtectHome = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          LockPersonality = true;
        };
      };
    }
    // lib.genAttrs (map (name: "hyperhive-${name}") unprivileged) (
      unit: serverUnit (lib.removePrefix "hyperhive-" unit)
    )
    // lib.optionalAttrs cfg.dashboard.enable {
      hyperhive-dashboard = {
        description = "hyperhive operator dashboard";
        wantedBy = [ "multi-user.target" ];
        requires = [ "hyperhive-init.service" ];
        after = [
          "hyperhive-init.service"
          "network.target"
        ]
        ++ map (name: "hyperhive-${name}.service") serverNames;
        environment.HIVE_HOME = cfg.home;
        restartTriggers = [ hiveToml ];
        serviceConfig = hardening // {
          Type = "notify";
          ExecStart = "${hive} serve dashboard";
          WorkingDirectory = "${cfg.home}/dashboard"; # its own state dir: nothing else is writable
          Restart = "on-failure";
          RestartSec = 2;
          StateDirectory = "${stateDirectory}/dashboard";
          StateDirectoryMode = "0700";
          LoadCredential = [
            "dashboard.token:${cfg.home}/tokens/dashboard.token"
            "dashboard.password:${
              if cfg.operatorSecretFile != null then toString cfg.operatorSecretFile else "${cfg.home}/dashboard.password"
            }"
          ];
        };
      };
    };
  };
}
