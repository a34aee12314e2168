"""gRPC edge of the public API: unpack, call the capture service, map errors."""
