"""The AnySync client: everything that holds keys or reads plaintext.

Layers, bottom up (import-linter keeps them, pyproject.toml):

    session                 the client home: config, token, keys, sign-up and log-in
    remote                  the server over gRPC, and packs straight from S3 by URL
    backup | restore | sync what the commands do
    repo                    envelopes, packs, trees, commits, refs and their history
    keys  statedb  progress master keys, the local SQLite state, the progress reporter
    chunker                 content-defined chunking with a keyed gear table

The server never imports this package.
"""
