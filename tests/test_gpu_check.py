"""The one-command GPU check runs end to end: here its CPU smoke form (the Triton
kernels in the interpreter, tiny sizes), which writes the same JSON and table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_run_writes_a_figure_for_every_path_and_case(tmp_path):
    paths, cases = ["torch-eager-triton", "torch-eager"], ["jaccard-D", "metrics-update"]
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick",
           "--skip-tests", "--skip-compile", "--paths", *paths, "--cases", *cases,
           "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (report_file,) = tmp_path.glob("gpu-check-cpu-*.json")
    report = json.loads(report_file.read_text())
    assert report["copy_rate_Bps"] > 0 and report["machine"]["torch"]
    ran = {(r["path"], r["case"]) for r in report["results"]}
    # metrics have no backward: one PyTorch path measures them
    assert ran == {(p, "jaccard-D") for p in paths} | {("torch-eager", "metrics-update")}
    for r in report["results"]:
        assert "error" not in r and r["median_ms"] > 0 and r["x_floor"] > 0
    table = report_file.with_suffix(".md").read_text()
    assert table.count("| tiny |") == len(report["results"])


def test_gpu_check_prints_the_compile_report_and_flags_a_failing_kernel(
    monkeypatch, capsys
):
    """The compile part of the check (CPU too): a table of every compiled kernel,
    rows that fail the rule marked, JAX's absence reported instead of raised."""
    from benchmarks import gpu_check
    from jdt_array._tools import kernel_report

    rows = [
        kernel_report.Row("triton", "good", "sm_90a", 4, 96, 0, 0, 0, 20),
        kernel_report.Row("triton", "spills", "sm_90a", 4, 128, 8, 8, 0, 16),
    ]
    monkeypatch.setattr(kernel_report, "triton_rows", lambda: rows)

    def no_jax():
        raise ImportError("no module named jax")

    monkeypatch.setattr(kernel_report, "pallas_rows", no_jax)
    report = gpu_check.compile_report()
    out = capsys.readouterr().out
    assert "| triton: good | 4 | 96 / 0 / 20 |" in out
    assert "| triton: spills | 4 | 128 / 16 / 16 **!** |" in out
    assert [r["ok"] for r in report["rows"]] == [True, False]
    assert "ImportError" in report["errors"]["pallas"]
