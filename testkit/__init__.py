"""The test kit: fakes, fake provider servers and rigs that tests and benchmarks share."""
