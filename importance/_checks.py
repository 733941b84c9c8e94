"""Deprecated alias of :mod:`importance.checks` (the public argument checks), kept only so that
branches written against the old private module keep importing; new code imports
``importance.checks``. Remove once nothing imports it."""

from importance.checks import check_positive_int, check_seed  # noqa: F401
