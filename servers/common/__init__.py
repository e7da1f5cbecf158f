"""The shared kernel: config, principals and tokens, allow-list policy, serving, sqlite, events, clients."""
