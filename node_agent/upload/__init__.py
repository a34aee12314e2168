"""The data path: streaming capture files to the coordinator, resumably."""
