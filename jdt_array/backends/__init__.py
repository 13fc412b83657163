"""Thin adapters between the array-API core and each framework.

Importing this package imports no framework; each adapter module imports its own.
"""
