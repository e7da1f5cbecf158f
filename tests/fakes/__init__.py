"""Stand-ins for what the tests cannot have here: systemd on D-Bus, nixos-container, journalctl."""
