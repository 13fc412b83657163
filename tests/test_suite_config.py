"""The test suite's own configuration in conftest.py: the slow marker lands on the
modules it names, long modules are collected first, and the report counts skipped
tests by reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import conftest

TESTS = Path(__file__).resolve().parent


def test_every_module_marked_slow_exists():
    missing = {name for name in conftest.SLOW_MODULES if not (TESTS / name).is_file()}
    assert not missing, f"conftest.SLOW_MODULES names missing modules: {sorted(missing)}"


def test_slow_tests_are_marked_and_others_are_not(request):
    items = [
        SimpleNamespace(path=TESTS / "test_long_run.py", name="test_a", markers=[]),
        SimpleNamespace(path=TESTS / "test_jdt.py", name="test_b", markers=[]),
        SimpleNamespace(path=TESTS / "test_x.py", name="test_torch_compile_y[1]",
                        originalname="test_torch_compile_y", markers=[]),
    ]  # fmt: skip
    for item in items:
        item.add_marker = item.markers.append
    conftest.pytest_collection_modifyitems(request.config, items)
    assert [[m.name for m in item.markers] for item in items] == [["slow"], [], ["slow"]]


def test_long_modules_come_first_and_the_rest_keeps_its_order(request):
    names = ["test_jdt.py", "test_keras.py", "test_a.py", "test_kernel_compile.py",
             "test_b.py", "test_keras.py"]  # fmt: skip
    items = [SimpleNamespace(path=TESTS / n, name=f"test_{i}", add_marker=lambda m: None)
             for i, n in enumerate(names)]  # fmt: skip
    conftest.pytest_collection_modifyitems(request.config, items)
    assert [item.name for item in items] == [
        "test_3", "test_1", "test_5", "test_0", "test_2", "test_4"
    ]  # fmt: skip
    missing = {name for name in conftest.LONG_FIRST if not (TESTS / name).is_file()}
    assert not missing, f"conftest.LONG_FIRST names missing modules: {sorted(missing)}"


class Reporter:
    def __init__(self, skipped):
        self.stats = {"skipped": skipped}
        self.lines = []

    def section(self, title, sep):
        self.lines.append(title)

    def write_line(self, line):
        self.lines.append(line)


def skipped(reason: str, where: str = "tests/test_a.py") -> SimpleNamespace:
    return SimpleNamespace(longrepr=(where, 3, f"Skipped: {reason}"))


def test_the_report_counts_skipped_tests_by_reason_most_first():
    reports = [skipped("no cuda device for torch", f"tests/test_{i}.py") for i in range(5)]
    reports += [skipped("cupy is not installed")] * 2
    reporter = Reporter(reports)
    config = SimpleNamespace(option=SimpleNamespace(reportchars="fEX"))
    conftest.pytest_terminal_summary(reporter, 0, config)
    assert reporter.lines[1:] == [
        "SKIPPED     5  no cuda device for torch",
        "SKIPPED     2  cupy is not installed",
    ]


def test_the_count_gives_way_to_pytests_own_list_of_skips():
    reporter = Reporter([skipped("cupy is not installed")])
    for chars in ("s", "a", "fEs"):
        config = SimpleNamespace(option=SimpleNamespace(reportchars=chars))
        conftest.pytest_terminal_summary(reporter, 0, config)
    assert reporter.lines == []
