"""Serving a measured variant over HTTP (server.py) and load-testing it with MLPerf LoadGen (loadtest.py)."""
