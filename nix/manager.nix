# The manager's container: the agent base, plus what the manager uses to look after the others.
# It edits every agent's proposed config repo (bound in by the lifecycle server), so it gets git
# and nix: `nix-instantiate --parse agent.nix` checks an agent.nix before it asks for approval.
{ config, lib, pkgs, ... }:
{
  imports = [ ./agent-base.nix ];
  hyperhive.agent.name = lib.mkDefault "manager";
  environment.systemPackages = [
    pkgs.git
    config.nix.package
  ];
}
