"""The approvals server: the queue of config changes and spawns the operator approves or denies."""
