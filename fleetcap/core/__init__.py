"""The shared core: vocabulary, naming, transport, metrics, filters and libpcap. It imports only fleetcap.v1."""
