"""Structured-output tests drive the scheduler in-process with the managers' helpers."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "managers"))  # sched_utils
