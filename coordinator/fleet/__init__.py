"""The agents' side: control streams, the agent registry, the data path."""
