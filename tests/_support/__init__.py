"""What the tests share, and no tests: the ``backend`` fixture's machinery
(``backends``), random inputs (``inputs``, and ``metrics`` for the metrics tests with
their tolerances), the option sets of ``jdt_loss`` (``options``), the float64
references written from the papers (``reference``, ``family_reference``,
``metrics_reference``), gradient checks against central differences (``gradients``)
and the harness of the distributed tests (``replicas``).

Test modules import from here and never from one another. ``pyproject.toml`` puts
``tests/`` on ``sys.path``, so this package is ``_support``.
"""
