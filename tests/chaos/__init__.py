"""The chaos suite: fault proxies, broker and catalog faults, an outside oracle (README.md)."""
