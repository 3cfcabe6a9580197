-- Schema version 6: a label per seen ref, so that a ref the server stops listing can be
-- named in words the user knows ("backup of /home/me/Docs on laptop", "sync folder
-- Photos") instead of by its opaque hash. The label comes from the decrypted head
-- commit and stays on this device; rows from before this version have an empty label
-- until their ref is seen again.
ALTER TABLE seen_commits ADD COLUMN label TEXT NOT NULL DEFAULT '';
