"""Visual features Z(x) of items from a fixed (pretrained) network, computed once and cached on disk.

:func:`visual_features` maps items ``x`` (``[n, ...]``) to ``float32[n, d]`` with a
:class:`FeatureExtractor`. The result is cached in ``<cache>/features/`` where ``<cache>`` is
``$LEARN2HASH_CACHE`` or ``~/.cache/learn2hash``; the cache key is the sha256 of the input array
(dtype, shape and bytes) together with the extractor's :attr:`~FeatureExtractor.key` (model,
weights checksum, input size). A second call with the same array and extractor reads the file
and computes nothing; another array (or model) gets another entry.
Image files (a lazily read split of an image-list or image-folder reader) are keyed instead by
their paths, sizes and modification times with the decoding geometry (:func:`files_sha256`), and
decoded by the image pipeline's encode transform, so touching a file recomputes. Each entry is
``<key>.npy`` plus ``<key>.json`` recording the key, the shape and the sha256 of the ``.npy``; an
entry whose sidecar is unreadable, whose checksum or shape does not match, or whose array cannot
be read is recomputed (with a warning on the ``learn2hash.features`` logger) and replaced, so a
damaged cache never yields wrong features. Files are written atomically (``.npy`` first, the
sidecar last).

Any registered backbone as the input of any method: :class:`ImageFeatures` (a scikit-learn transformer:
image paths or arrays of images -> pooled features, through this cache) and :class:`FeatureHasher`
(``ImageFeatures`` in front of any hasher; what ``train --features NAME`` saves, so that a run's hasher
encodes raw images by itself). Their entries also record a digest per row (:func:`file_digests`: a
file's path, size and modification time; :func:`row_digests`: an item's bytes), so a new list or array
copies every row an earlier entry of the same network and decoding holds and computes only the rest:
a changed file is the only one recomputed, a training sample reads its pool's features. Image files
are computed chunk by chunk into a memory map of the entry's file and read back memory-mapped, so the
memory a call needs does not grow with the number of images.

Extractors: :class:`PretrainedExtractor` (``efficientnet-lite0`` with ImageNet weights, global
average-pooled features of the last conv layer; 1,280 per image), :class:`FlattenExtractor`
(the items themselves, flattened; for feature-vector datasets, whose items already are visual
features, and for quick experiments) and :class:`BackboneExtractor` (any built backbone, keyed by
its name, options and a checksum of its weights: the frozen-feature mode of deep hashers).
:func:`make_extractor` builds one by name.
"""

from learn2hash import _atomic  # noqa: F401
from learn2hash.features.cache import (CACHE_ENV, CACHE_FORMAT, CACHE_VERSION, CHECK_BLOCK, array_features,  # noqa: F401
                                       array_sha256, cache_key, cache_root, file_digests, file_features,
                                       files_sha256, plain_json, row_digests, visual_features)
from learn2hash.features.extractors import (EXTRACTORS, FULL_SIZE, SMALL_IMAGE, SMALL_IMAGE_SIZE,  # noqa: F401
                                            BackboneExtractor, FeatureExtractor, FlattenExtractor,
                                            PretrainedExtractor, make_extractor, module_sha256)
from learn2hash.features.hasher import FeatureHasher  # noqa: F401
from learn2hash.features.transformer import AUTO, FILE_CHUNK, MIN_CACHED_ITEMS, ImageFeatures  # noqa: F401
