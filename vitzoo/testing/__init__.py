"""Helpers for vitzoo's own tests only: the golden-data reader (``vitzoo.testing.golden``).

Nothing in the library imports this package; it lives inside ``vitzoo`` so that the test suite and the
tools reach the helpers through one import path on every checkout.
"""
