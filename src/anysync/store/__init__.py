"""Object storage behind one protocol: the local directory store now, S3 later."""

from anysync.store.base import READ_CHUNK, ObjectStore, OutOfRangeError, Readable, check_key
from anysync.store.local import LocalStore

__all__ = ["READ_CHUNK", "LocalStore", "ObjectStore", "OutOfRangeError", "Readable", "check_key"]
