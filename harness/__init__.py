"""The per-agent harness that drives Claude Code turns inside the agent's sandbox."""
