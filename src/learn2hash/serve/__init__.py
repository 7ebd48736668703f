"""Search service: an HTTP API and a web page over a run's hasher and Hamming index.

``learn2hash serve --run DIR`` starts it (see :mod:`learn2hash.serve.app` for the routes);
:class:`SearchService` does the work and can be used without the web framework.
"""

from learn2hash.serve.app import create_app, load_api_key, make_server, serve
from learn2hash.serve.service import Decoder, Limits, RequestError, SearchService

__all__ = ["Decoder", "Limits", "RequestError", "SearchService", "create_app", "load_api_key", "make_server", "serve"]
