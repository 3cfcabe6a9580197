"""AnySync: self-hosted cloud storage with end-to-end encryption."""

__version__ = "0.1.0"
