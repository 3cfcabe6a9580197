"""The repository: blobs, packs, trees and commits on top of a remote object API."""
