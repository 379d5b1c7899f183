"""Fuzz campaign for medseg's readers: structure-aware mutation of every input format, run
through ``medseg info --json`` and ``medseg convert`` in forked (or fresh) processes, each run
classified (clean, traceback, crash, timeout, memory, phi, left_behind, outside, invalid_json,
nonsense). Entry point: ``python -m benchmarks.fuzz.run --n 10000 --seed 1``.
"""
