"""Brownie scripts (`brownie run scripts/<name>.py`)."""
