"""Deployment helpers: the local namespace fleet used by `make demo` and the end-to-end tests."""
