"""Thin adapters between the array-API core and each framework: ``torch`` (autograd,
modules, ``torch.distributed``) and ``jax`` (``custom_vjp`` forms, collectives).

Importing this package imports no framework; each adapter module imports its own.
"""
