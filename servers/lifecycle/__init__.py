"""The lifecycle server: agent sandboxes, config repos, crash watch, logs."""
