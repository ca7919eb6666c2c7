"""KAMI's performance benchmarks: ``python -m tests.benchmarks`` (``make bench``).

Nothing here is a test except ``test_smoke.py``; the runner lives in modules whose names
do not start with ``test_`` so that pytest never collects it.
"""
