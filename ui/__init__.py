"""The operator dashboard, a NiceGUI app and an MCP client of the servers (not built yet)."""
