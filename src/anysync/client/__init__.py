"""The AnySync client: everything that holds keys or reads plaintext.

Layers, bottom up (import-linter keeps them, pyproject.toml):

    session                 the account flows: sign-up, log-in, certificate pinning, passwd
    home                    the client home: its files, config, token, certificate, unlock
    remote                  the server over gRPC, and packs straight from S3 by URL
    wire                    protobuf <-> domain types; a failed call -> its error
    backup | restore | sync what the commands do
    repo                    envelopes, packs, trees, commits, refs and their history
    keys  statedb  progress master keys, the local SQLite state, the progress reporter,
    localfs                 and local files through directory handles (no-follow, atomic)
    chunker                 content-defined chunking with a keyed gear table

The server never imports this package.
"""
