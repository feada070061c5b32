"""Developer tools: sample channels, the demo and helpers shared by tests and benchmarks."""
