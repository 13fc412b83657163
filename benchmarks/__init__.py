"""Speed and memory benchmarks of jdt-array (never part of the test run)."""
