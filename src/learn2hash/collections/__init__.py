"""Collections: a user's own images (files under a root, or items given by an external id), their
codes under one run's hasher, and the Hamming index that searches them.

```
COLL/
  collection.json   format, version, the run folder, the hasher's identity (sha256 of the run's
                    hasher/hasher.json), bits, the root the item paths are relative to
  index/            a HammingIndex (see learn2hash.index.storage): codes, ids and, as each item's
                    payload, its source (b"p" + path relative to the root, or b"x" + external id)
  work/             encoding in progress: shard-<key>.npy (packed codes) and shard-<key>.json
                    (written last: the shard's files, which were kept, which skipped), the key a
                    checksum of the hasher, the root and the shard's files (names, sizes, times);
                    deleted once committed to the index
```

**Consistency.** An item's code, id and source are one record of the index, so every committed
version of the index holds matching codes and sources, and a reader (another process, or
:meth:`Collection.search` in this one) sees the collection before or after a whole change. Every
change goes through the index folder's writer lock (``index/.writer.lock``): the CLI, the service
and any number of processes and threads take turns, each change applied to the latest committed
state, so no change is lost. A process that holds a :class:`Collection` sees the changes of others
at its next search (the manifest is compared, not re-read when it is unchanged).

**Encoding** (:meth:`Collection.create`, :meth:`Collection.add_images`) lists the images (sorted by
path), leaves out those already in the collection (by path), and encodes the rest in shards of
``shard_size`` files through the run's hasher (``hasher.encode_images``). Each finished shard is
written atomically (codes first, its JSON last), so after a ``kill -9`` at any point running the
same command again keeps the finished shards and gives exactly the codes and ids of an
uninterrupted run. Memory holds one shard at a time while encoding; the commit adds the shards to
the index one by one. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank encodes the shards
``i % world_size == rank`` of the same job (gloo on CPU, nccl on GPU), then rank 0 commits them in
order: the collection is the same, byte for byte, as a one-process run's. The ranks must share the
collection's folder (one machine, or a shared file system).
"""

from __future__ import annotations

from learn2hash.collections._common import (DEFAULT_SHARD_SIZE, FORMAT, INDEX, KIND, META, SHARD_FORMAT,  # noqa: F401
                                            VERSION, WORK, Hit, _hasher_checksum, _payload, _source)
from learn2hash.collections.collection import Collection

__all__ = ["Collection", "Hit", "DEFAULT_SHARD_SIZE"]
