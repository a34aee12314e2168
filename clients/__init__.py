"""fleetcap clients: the Python SDK, the CLI, and the gRPC transport every component shares."""
