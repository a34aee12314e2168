"""Durable state: the store contract, its etcd and memory implementations, the key layout."""
