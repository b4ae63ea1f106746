"""``python -m tristream.shards.reindex SHARD_OR_FOLDER...``: write the frame index
(``<shard>.idx``, :mod:`tristream.shards.frame_index`) of local shards written without one."""

from tristream.shards.frame_index import main

if __name__ == "__main__":
    raise SystemExit(main())
