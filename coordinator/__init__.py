"""fleetcap coordinator: the public API, the fleet of agents, the state in etcd, the sinks."""
