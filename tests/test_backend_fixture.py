"""The ``backend`` fixture's list: every array library the package lists, in its test
variants, so that a library added to the package is tested without editing the tests."""

from _support.backends import (
    BACKENDS,
    GRID_BACKENDS,
    LIBRARIES,
    VARIANTS,
    ArrayLibrary,
    backends_of,
)


def test_every_listed_library_has_a_test_backend():
    assert {b.library for b in BACKENDS} == set(LIBRARIES)


def test_every_variant_belongs_to_a_listed_library():
    # A library dropped from (or renamed in) LIBRARIES must not leave stale variants.
    assert set(VARIANTS) <= set(LIBRARIES)
    assert all(VARIANTS.values())


def test_backend_names_are_unique():
    names = [b.name for b in BACKENDS]
    assert len(names) == len(set(names))


def test_a_library_without_variants_gets_one_default_backend():
    library = ArrayLibrary("some_array_library", "cuda")
    assert library not in VARIANTS
    (backend,) = backends_of(library)
    assert backend.name == library.name == "some_array_library-cuda"
    assert backend.library is library
    assert backend.float_dtype == "float64"
    assert not backend.jit
    assert not backend.strict_flags


def test_the_grid_backends_are_numpy_and_one_autodiff_library():
    assert [b.name for b in GRID_BACKENDS] == ["numpy", "torch-float64"]
    assert all(b in BACKENDS for b in GRID_BACKENDS)
