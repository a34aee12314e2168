"""Packet capture: filter compilation, the libpcap binding and capture sessions."""
