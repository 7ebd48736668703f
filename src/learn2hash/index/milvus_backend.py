"""The Milvus backend: codes in a Milvus collection (``BINARY_VECTOR``, ``BIN_FLAT``, ``HAMMING``).

``milvus_uri`` is a Milvus Lite database file (embedded, one machine; the default is a file in a new
temporary folder, removed by :meth:`close`) or the URI of a Milvus server or cluster
(``http://host:19530``). Items are stored under their positions as primary keys. Milvus needs codes
of a multiple of 8 bits; one request returns at most :data:`MAX_RESULTS` items per query, so a
k-NN with a larger k, or a range query with more hits, is refused rather than truncated.

Requirements: ``pymilvus`` 2.5.x with ``milvus-lite`` 2.5.x (Milvus Lite 3.x refuses binary
vectors); milvus-lite 2.5 imports ``pkg_resources``, which setuptools 81 removed. Milvus picks its
own items among ties at the k-th distance.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings

import numpy as np

from learn2hash.errors import Learn2HashError
from learn2hash.index.results import MISSING_DISTANCE, MISSING_ID

#: Milvus's limit on the results of one query (its ``topk`` limit).
MAX_RESULTS = 16384
_INSERT_BATCH = 20000


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise Learn2HashError(
            "the milvus backend needs pymilvus 2.5 and milvus-lite 2.5: pip install 'learn2hash[milvus]'"
        ) from None
    return pymilvus


class MilvusEngine:
    name = "milvus"

    def __init__(self, bits: int, milvus_uri: str | None = None, milvus_collection: str | None = None):
        if bits % 8:
            raise Learn2HashError(
                f"the milvus backend needs a code length that is a multiple of 8 (BINARY_VECTOR), got {bits} bits"
            )
        pm = _pymilvus()
        self.bits = bits
        self._tmp = None
        if milvus_uri is None:
            self._tmp = tempfile.mkdtemp(prefix="learn2hash-milvus-")
            milvus_uri = os.path.join(self._tmp, "milvus.db")
        self.uri = str(milvus_uri)
        self.collection = milvus_collection or f"learn2hash_{secrets.token_hex(6)}"
        try:
            with warnings.catch_warnings():  # milvus-lite 2.5 still imports pkg_resources
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                self._client = pm.MilvusClient(self.uri)
        except Exception as exc:  # connection problems come in many types
            self._cleanup()
            raise Learn2HashError(f"cannot open Milvus at {self.uri}: {exc}") from None
        if self._client.has_collection(self.collection):
            raise Learn2HashError(f"Milvus collection {self.collection!r} already exists at {self.uri}; choose another name")
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pos", pm.DataType.INT64, is_primary=True)
        schema.add_field("code", pm.DataType.BINARY_VECTOR, dim=bits)
        params = self._client.prepare_index_params()
        params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
        self._client.create_collection(self.collection, schema=schema, index_params=params,
                                       consistency_level="Strong")
        self._n = 0

    def add(self, packed: np.ndarray) -> None:
        packed = np.ascontiguousarray(packed, np.uint8)
        for start in range(0, packed.shape[0], _INSERT_BATCH):
            block = packed[start:start + _INSERT_BATCH]
            rows = [{"pos": self._n + start + i, "code": block[i].tobytes()} for i in range(block.shape[0])]
            self._client.insert(self.collection, rows)
        self._n += packed.shape[0]

    def remove(self, positions: np.ndarray) -> None:
        positions = [int(p) for p in np.asarray(positions).reshape(-1)]
        for start in range(0, len(positions), _INSERT_BATCH):
            self._client.delete(self.collection, ids=positions[start:start + _INSERT_BATCH])

    def _search(self, queries: np.ndarray, limit: int, params: dict) -> list:
        data = [bytes(row) for row in np.ascontiguousarray(queries)]
        return self._client.search(self.collection, data=data, limit=limit, anns_field="code",
                                   search_params={"metric_type": "HAMMING", "params": params})

    def search(self, queries, k, alive, n_alive, threads, method="auto"):
        nq = queries.shape[0]
        out_d = np.full((nq, k), MISSING_DISTANCE, np.int32)
        out_p = np.full((nq, k), MISSING_ID, np.int64)
        if nq == 0 or n_alive == 0:
            return out_d, out_p
        limit = min(k, n_alive)
        if limit > MAX_RESULTS:
            raise Learn2HashError(f"the milvus backend returns at most {MAX_RESULTS} results per query, k={k} asked")
        for i, row in enumerate(self._search(queries, limit, {})):
            for j, hit in enumerate(row):
                out_d[i, j] = int(round(hit["distance"]))
                out_p[i, j] = int(hit["id"])
        return out_d, out_p

    def range_search(self, queries, radius, alive, threads, method="auto"):
        nq = queries.shape[0]
        if nq == 0 or self._n == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        # Milvus keeps range_filter <= distance < radius.
        rows = self._search(queries, MAX_RESULTS, {"radius": radius + 1, "range_filter": -1})
        lims = np.zeros(nq + 1, np.int64)
        dist, pos = [], []
        for i, row in enumerate(rows):
            if len(row) >= MAX_RESULTS:
                raise Learn2HashError(
                    f"query {i} has {MAX_RESULTS} or more items within radius {radius}: more than the milvus "
                    f"backend can return; use a smaller radius or backend='native'"
                )
            lims[i + 1] = lims[i] + len(row)
            dist.extend(int(round(h["distance"])) for h in row)
            pos.extend(int(h["id"]) for h in row)
        return lims, np.array(dist, np.int32), np.array(pos, np.int64)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            try:
                if self._tmp is not None:
                    client.drop_collection(self.collection)
                client.close()
            except Exception:  # closing must not mask the caller's own error
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
