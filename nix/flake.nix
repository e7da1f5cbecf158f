# hyperhive on NixOS. This flake lives in nix/ of the repository and builds from the whole of it:
# use it as `github:OWNER/hyperhive?dir=nix` (or `git+file:///path/to/hyperhive?dir=nix`).
#
#   packages.<system>.default             the `hive` command (and `hive-harness`)
#   nixosModules.default                  services.hyperhive: the servers and dashboard as units
#   nixosConfigurations.agent-base        the system inside an agent's nixos-container
#   nixosConfigurations.manager           the same for the manager
#
# Each agent's container is built from a flake the lifecycle server generates, which extends
# agent-base (or manager) with the agent's identity and its own agent.nix: see docs/nixos.md.
{
  description = "hyperhive: a swarm of Claude Code agents on one host, every capability an MCP tool server";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" ]; # claude-agent-sdk's wheel (with the Claude Code CLI) is x86_64 only
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The agent bases. A generated agent flake calls .extendModules on one of them.
      agentSystem = module: lib.nixosSystem { modules = [ module ]; };
    in
    {
      packages = forAllSystems (pkgs: rec {
        hyperhive = pkgs.callPackage ./package.nix { };
        default = hyperhive;
      });

      overlays.default = final: _prev: { hyperhive = final.callPackage ./package.nix { }; };

      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./module.nix ];
          services.hyperhive = {
            package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
            # The agents' flakes extend this very flake: the hyperhive the host runs. In a flake
            # fetched with ?dir=nix, self is the whole repository.
            flake = lib.mkDefault "path:${self.outPath}?dir=nix";
          };
        };
      nixosModules.agent = ./agent-base.nix;

      nixosConfigurations.agent-base = agentSystem ./agent-base.nix;
      nixosConfigurations.manager = agentSystem ./manager.nix;

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
