"""Importing torchvision where its compiled operators do not match the installed torch.

A torchvision wheel built for another torch variant (here a CUDA build of torchvision 0.28.0
beside the CPU build of torch 2.13.0) fails on ``import torchvision`` with ``RuntimeError:
operator torchvision::nms does not exist``: its ``_meta_registrations`` module registers fake
(meta) kernels for compiled operators that were never loaded. Models, transforms and weight
enums do not need those operators, so :func:`import_torchvision` retries the import with the
fake-kernel registrations of ``torchvision::`` operators skipped. Operators such as ``nms``
then stay unavailable (learn2hash does not use them).

timm and open_clip import torchvision, so call :func:`import_torchvision` before importing them.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

from learn2hash.errors import Learn2HashError

_LOCK = threading.Lock()


def _drop_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """``torchvision``, imported (once) even when its compiled operators are missing.

    Raises :class:`Learn2HashError` when torchvision is not installed or cannot be imported at all.
    """
    module = sys.modules.get("torchvision")
    if module is not None and hasattr(module, "models"):
        return module
    with _LOCK:
        try:
            import torchvision
            return torchvision
        except ImportError as exc:
            raise Learn2HashError(
                f"torchvision is not installed ({exc}); install the build that matches your torch: "
                "pip install 'learn2hash[vision]'") from None
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise Learn2HashError(f"torchvision cannot be imported: {exc}") from None
        _drop_partial_import()
        import torch.library

        original = torch.library.register_fake

        def register_fake(op, func=None, /, *args, **kwargs):
            if isinstance(op, str) and op.startswith("torchvision::"):
                return func if func is not None else (lambda fn: fn)
            return original(op, func, *args, **kwargs)

        torch.library.register_fake = register_fake
        try:
            import torchvision
        except Exception as exc:
            _drop_partial_import()
            raise Learn2HashError(
                f"torchvision cannot be imported ({type(exc).__name__}: {exc}); install the torchvision build "
                "that matches your torch") from None
        finally:
            torch.library.register_fake = original
        return torchvision
