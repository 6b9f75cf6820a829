"""The reliability suite (issue 17): each promise of the README counted over many generated cases.

One module per section holds its cases and a `run_*` function returning a `Table` (`tally.py`); the tests
beside them (`test_*.py`, marked `reliability`) run a small sample in CI, and `bench/reliability.py` runs the full
counts and prints the tables. Every section runs at LOG_LEVEL=DEBUG and scans its logs (`logscan.py`).
"""
