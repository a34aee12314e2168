"""fleetcap node agent: captures with libpcap on one VM or scale-set instance."""
