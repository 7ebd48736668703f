"""Search service: an HTTP API and a web page over a run's or a collection's hasher and Hamming index.

``learn2hash serve --run DIR`` / ``--collection COLL`` starts it (see :mod:`learn2hash.serve.app` for
the routes, :mod:`learn2hash.serve.protocol` for the read timeouts); :class:`SearchService` (a run)
and :class:`CollectionService` (a collection, changed live) do the work and can be used without the
web framework.
"""

from learn2hash.serve.app import create_app, load_api_key, make_server, open_service, serve
from learn2hash.serve.collection_service import CollectionService
from learn2hash.serve.service import Decoder, Limits, RequestError, SearchService

__all__ = ["CollectionService", "Decoder", "Limits", "RequestError", "SearchService", "create_app", "load_api_key",
           "make_server", "open_service", "serve"]
