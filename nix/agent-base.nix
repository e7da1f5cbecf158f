# The NixOS system inside every agent's nixos-container: the base that each agent's generated flake
# extends (flake.nix's nixosConfigurations.agent-base) with its identity and its own agent.nix.
#
# The container runs one service, the agent's harness, as the agent's own host uid. What the
# harness runs and with which environment comes from the lifecycle server at each start
# (sandbox.json, read with `hive sandbox-exec`): hyperhive policy stays in agent.toml. This module
# holds what is container-level: packages, extra environment, anything NixOS can configure.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.hyperhive.agent;
  inherit (lib) mkOption types;
in
{
  options.hyperhive.agent = {
    name = mkOption {
      type = types.strMatching "[a-z][a-z0-9-]{0,10}";
      default = "agent";
      description = "The agent's name (set by the generated flake).";
    };
    uid = mkOption {
      type = types.ints.between 1000 2147483647;
      default = 200000;
      description = "The host uid the harness runs as; the container has no user namespace (set by the generated flake).";
    };
    sharedGid = mkOption {
      type = types.nullOr (types.ints.between 1000 2147483647);
      default = null;
      description = "The hive's group for /hive/shared (bound in from the host), a supplementary group of the harness; null: the agent has no shared workspace (set by the generated flake).";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/hyperhive/agents/${cfg.name}/state";
      defaultText = lib.literalExpression ''"/var/lib/hyperhive/agents/''${config.hyperhive.agent.name}/state"'';
      description = "The agent's own files and working directory, bound in from the host at the same path.";
    };
    harnessDir = mkOption {
      type = types.str;
      default = "/var/lib/hyperhive/agents/${cfg.name}/harness";
      defaultText = lib.literalExpression ''"/var/lib/hyperhive/agents/''${config.hyperhive.agent.name}/harness"'';
      description = "Harness-owned files (turn state, Claude Code's config); the agent's HOME. Bound in from the host.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The hyperhive package whose harness runs in the container.";
    };
    packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs.ripgrep pkgs.python3 ]";
      description = "Extra packages on the agent's PATH (its Bash tool and its harness).";
    };
    env = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        JAVA_HOME = "/run/current-system/sw/lib/openjdk";
      };
      description = "Extra environment of the harness; agent.toml's [env] and hyperhive's own variables win.";
    };
  };

  config = {
    boot.isContainer = true;
    nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
    system.stateVersion = "25.05";
    networking.hostName = cfg.name;

    # The container shares the host's network namespace (the hive's servers are on host loopback):
    # nothing in it may configure that network or its firewall.
    networking.useDHCP = false;
    networking.useHostResolvConf = true;
    networking.firewall.enable = false;
    services.resolved.enable = false;

    users.groups.agent.gid = cfg.uid;
    users.groups.hive-shared = lib.mkIf (cfg.sharedGid != null) { gid = cfg.sharedGid; };
    users.users.agent = {
      isNormalUser = true;
      uid = cfg.uid;
      group = "agent";
      extraGroups = lib.optional (cfg.sharedGid != null) "hive-shared";
      home = cfg.harnessDir;
      createHome = false; # the lifecycle server made it, owned by this uid
      description = "hyperhive agent ${cfg.name}";
    };

    environment.systemPackages = [
      cfg.package
      pkgs.git
      pkgs.coreutils
      pkgs.findutils
      pkgs.gnugrep
      pkgs.gnused
    ]
    ++ cfg.packages;
    environment.etc."hyperhive/env.json".text = builtins.toJSON cfg.env;

    systemd.services.hyperhive-harness = {
      description = "hyperhive harness of agent ${cfg.name}";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      unitConfig = {
        # The container ends with its harness, passing on the exit status: the host's
        # container@NAME unit then shows a crash as a failure, which the lifecycle server watches.
        SuccessAction = "exit";
        FailureAction = "exit";
      };
      serviceConfig = {
        User = "agent";
        Group = "agent";
        ExecStart = "${cfg.package}/bin/hive sandbox-exec --base-env /etc/hyperhive/env.json ${cfg.harnessDir}/credentials/sandbox.json";
        # On the container's console, so on the host's journal of container@NAME (`hive logs NAME`).
        StandardOutput = "journal+console";
        StandardError = "journal+console";
        NoNewPrivileges = true;
        PrivateTmp = true;
        # What it makes in /hive/shared (setgid: the hive's group) the other agents may change too.
        UMask = "0002";
      };
    };
  };
}
