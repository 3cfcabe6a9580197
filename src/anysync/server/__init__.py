"""The AnySync server: gRPC services over TLS, SQLite metadata, an ObjectStore for packs.

It stores ciphertext and opaque IDs only; it never imports the client's key handling.
"""
