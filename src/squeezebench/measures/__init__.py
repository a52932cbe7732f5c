"""What is measured: latency, memory, size, environment."""
