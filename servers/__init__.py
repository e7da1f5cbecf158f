"""hyperhive's tool servers, their shared kernel (`common`) and the `hive` CLI."""
