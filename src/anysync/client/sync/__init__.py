"""Two-way multi-device sync of folders, built on commits and compare-and-swap refs."""
