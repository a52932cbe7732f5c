"""Reports: the comparison table."""
