"""The tools behind the ``jdt-array`` command, the tests, the benchmarks and the
examples: the list of array libraries, the consistency report and the demo."""
