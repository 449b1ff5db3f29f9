"""Hostile input: fuzzed parsers and receivers, a flood of poison records."""
