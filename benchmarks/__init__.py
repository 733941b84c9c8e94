"""The benchmark suite: a pytest plugin (``plugin/``, wired in by ``conftest.py``) and one folder
per axis, each with its study (``study.py``: a plan from the run options and a memo) and its cases
(``test_*.py``).

Run it with ``pytest benchmarks`` (``./run bench``): the benchmark options are declared in
``benchmarks/conftest.py``, which pytest reads first only when ``benchmarks`` or a path inside it
is on the command line.
"""
