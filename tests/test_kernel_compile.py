"""The fused kernels compile for real GPUs, with no GPU here (``jdt_array._tools.
kernel_report``):

* every Triton specialization the launcher can run compiles for sm_80 (A100), sm_90a
  (H100/H200) and sm_100a (B200) with Triton's compiler, and ``ptxas -v`` finds no
  spill and a register count that keeps at least 16 warps resident per multiprocessor;
* the JAX losses with the Pallas form export for platform ``cuda`` with
  interpretation off, under JAX's default GPU lowering (Mosaic GPU) and with it
  turned off: the kernels pin Pallas's Triton lowering, whose rules (block shapes,
  strides) ``jax.export`` runs; their Triton IR compiles without spills too.

Compiling is slow on a small machine (the whole Triton set is a few hundred compiles:
about a minute on four idle cores); each result is cached by the kernel's source
(``JDT_ARRAY_KERNEL_REPORT_CACHE``), so a second run takes seconds.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from jdt_array._kernels import triton_launch  # noqa: E402
from jdt_array._tools import kernel_report  # noqa: E402

TARGETS = list(kernel_report.TARGETS)


@pytest.fixture(scope="module")
def triton_rows():
    return kernel_report.triton_rows()


@pytest.mark.parametrize("target", TARGETS)
def test_every_triton_specialization_compiles_without_spills_keeping_16_warps_resident(
    triton_rows, target
):
    rows = [r for r in triton_rows if r.target == target]
    assert sorted(r.name for r in rows) == sorted(
        s.name for s in triton_launch.specializations()
    )
    failing = [r for r in rows if not r.ok]
    assert not failing, "\n" + kernel_report.table(failing)
    assert all(r.registers <= triton_launch.MAX_REGISTERS for r in rows)
    assert min(r.resident_warps for r in rows) >= kernel_report.MIN_RESIDENT_WARPS


def test_every_launch_is_a_reported_specialization(monkeypatch):
    """The launcher runs only what the report compiles: its launches over class
    counts, label kinds and layouts, recorded without running them."""
    launched = []

    def record(kernel, grid, *args, **options):
        constants = {k: options[k] for k in ("HARD", "CLASSES_LAST", "ONE_TILE",
                                             "BLOCK_C", "BLOCK_N")}  # fmt: skip
        name = "statistics" if "partial" in kernel.arg_names[4] else "gradient"
        launched.append((name, constants, options["num_warps"], options["maxnreg"]))

    monkeypatch.setattr(triton_launch, "_launch", record)
    monkeypatch.setattr(triton_launch, "_kernels_for", lambda t: triton_launch._kernels())
    for c in (1, 2, 3, 4, 5, 8, 9, 16, 19, 32, 33, 150, 300):
        for last in (False, True):
            z = torch.zeros((2, 3, 5, c) if last else (2, c, 3, 5))
            axis = 3 if last else 1
            hard = torch.zeros((2, 3, 5), dtype=torch.long)
            for label in (hard, torch.zeros_like(z)):
                triton_launch.statistics(z, label, None, axis, 1.0, None)
                g = torch.zeros((2, c))
                triton_launch.gradient(z, label, None, g, g, None, axis, 1.0, None)
    compiled = {(s.kernel, tuple(s.constants.items()), s.warps)
                for s in triton_launch.specializations()}  # fmt: skip
    assert len(launched) == 13 * 2 * 2 * 2
    for name, constants, warps, registers in launched:
        assert (name, tuple(constants.items()), warps) in compiled
        assert registers == triton_launch.MAX_REGISTERS


def test_resident_warps_follow_the_register_file():
    # 128 registers x 4 warps: 4 programs (16 warps); 129 registers round up to 136.
    assert kernel_report.resident_warps(128, 4, 0, "sm_90a") == 16
    assert kernel_report.resident_warps(129, 4, 0, "sm_90a") == 12
    assert kernel_report.resident_warps(32, 4, 0, "sm_90a") == 64  # the warp limit
    assert kernel_report.resident_warps(32, 1, 0, "sm_90a") == 32  # the program limit
    # shared memory: 100 KiB (+ 1 KiB reserved) per program, 228 KiB per SM: 2 programs
    assert kernel_report.resident_warps(32, 4, 100 * 1024, "sm_90a") == 8


# -- Pallas ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pallas_exports():
    pytest.importorskip("jax.experimental.pallas")
    return kernel_report.pallas_exports()


def test_pallas_losses_export_for_cuda_with_interpretation_off(pallas_exports):
    """Both class axes, hard and soft labels, keep masks, 3-D, C = 1, 5, 19, 150, 300:
    the value and gradient of each lower for CUDA through two Pallas kernels."""
    names = {kernel_report._case_name(*case, "float32")
             for case in kernel_report.PALLAS_CASES}  # fmt: skip
    assert set(pallas_exports) == names
    for case, kernels in pallas_exports.items():
        assert len(kernels) == 2, case  # pass 1 and pass 2
        assert all("tt.func public" in k for k in kernels), case


@pytest.mark.parametrize("mosaic", [True, False], ids=["default-lowering", "triton-flag"])
def test_pallas_pins_the_triton_lowering_whatever_jax_defaults_to(mosaic):
    jax = pytest.importorskip("jax")
    pytest.importorskip("jax.experimental.pallas")
    from jdt_array._kernels import choice
    from jdt_array.backends import jax as jj

    z = jax.ShapeDtypeStruct((2, 19, 8, 24), jax.numpy.float32)
    y = jax.ShapeDtypeStruct((2, 8, 24), jax.numpy.int32)
    step = jax.jit(jax.value_and_grad(lambda a, b: jj.jaccard_loss(a, b)))
    before = jax.config.jax_pallas_use_mosaic_gpu
    jax.config.update("jax_pallas_use_mosaic_gpu", mosaic)
    try:
        with choice.setting("jax", "pallas"):
            exported = jax.export.export(step, platforms=["cuda"], disabled_checks=[
                jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
            ])(z, y)  # fmt: skip
    finally:
        jax.config.update("jax_pallas_use_mosaic_gpu", before)
    module = exported.mlir_module()
    assert module.count("__gpu$xla.gpu.triton") == 2
    assert "mosaic" not in module.lower()


def test_pallas_interprets_by_the_platform_it_is_lowered_for():
    """The same traced step: interpreted (no Triton kernel) when lowered for CPU,
    compiled Triton kernels when lowered for CUDA; the core function (with the
    cross-entropy of ce_jdt_loss from the same pass) as the custom_vjp form."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("jax.experimental.pallas")
    import jdt_array
    from jdt_array._kernels import choice

    z = jax.ShapeDtypeStruct((2, 5, 8, 16), jax.numpy.float32)
    y = jax.ShapeDtypeStruct((2, 8, 16), jax.numpy.int32)
    step = jax.jit(jax.value_and_grad(lambda a, b: jdt_array.ce_jdt_loss(a, b)))
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    with choice.setting("jax", "pallas"):
        modules = {
            platform: jax.export.export(step, platforms=[platform],
                                        disabled_checks=checks)(z, y).mlir_module()
            for platform in ("cpu", "cuda")
        }  # fmt: skip
    assert "__gpu$xla.gpu.triton" not in modules["cpu"]
    assert modules["cuda"].count("__gpu$xla.gpu.triton") == 2


@pytest.fixture(scope="module")
def pallas_rows():
    pytest.importorskip("jax.experimental.pallas")
    return kernel_report.pallas_rows()


@pytest.mark.parametrize("target", TARGETS)
def test_pallas_kernels_compile_without_spills_keeping_16_warps_resident(
    pallas_rows, target
):
    rows = [r for r in pallas_rows if r.target == target]
    assert rows
    failing = [r for r in rows if not r.ok]
    assert not failing, "\n" + kernel_report.table(failing)
