"""numba for the fused training kernels: whether it imports, and how a kernel is compiled.

Where it sits in the flow: the compiled training loop of the VAE (``_fused_vae.py``)
is decorated with :func:`jit`, and the VAE checks :data:`AVAILABLE` (through
``_fused_vae``) before choosing its fused path. The classifier kernel (``_fused.py``)
still carries its own copy of this wrapper and of the import check, with the same
behaviour. numba is optional: when it cannot be imported, ``AVAILABLE`` is False,
``UNAVAILABLE_REASON`` says why, and every model trains with torch instead.

:func:`jit` is ``numba.njit(cache=True)`` made robust to an installed, read-only
package: numba caches next to the module (``__pycache__``) and, when that is not
writable, in the user cache directory; when neither is usable it refuses
``cache=True``, and :func:`jit` then points ``NUMBA_CACHE_DIR`` at a temporary
directory (only if the user has not set it) and, as a last resort, compiles without a
cache (docs/fused_training.md, "JIT cache"). numba keys a cached function by the file
that defines it, not by this module, so decorating here changes no cache key.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["AVAILABLE", "UNAVAILABLE_REASON", "fallback_cache_dir", "jit"]

logger = logging.getLogger(__name__)

try:
    import numba
except Exception as exc:  # ImportError, or a broken numba/llvmlite install
    AVAILABLE = False
    UNAVAILABLE_REASON = f"numba could not be imported ({type(exc).__name__}: {exc})"
else:
    AVAILABLE = True
    UNAVAILABLE_REASON = ""


def fallback_cache_dir() -> str:
    """The cache directory used when neither the package nor the user cache is writable."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"recourse_ray-numba-cache-{user}")


def jit(fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
    """Compile ``fn`` with ``numba.njit(cache=True, error_model="numpy")``, robust to a read-only package.

    Usable bare (``@jit``) or with options (``@jit(inline=True)``).

    Args:
        fn: the function to compile (None when called with options only).
        inline: inline the function into its jitted callers (numba IR inlining). numba
            compiles each function on its own and LLVM does not inline across them, so a
            small helper called per unit or per step would otherwise cost a call and the
            reference counting of its array arguments.

    Returns:
        The numba dispatcher, or a decorator when ``fn`` is None.
    """
    if fn is None:
        return functools.partial(jit, inline=inline)
    options = {"error_model": "numpy", "inline": "always" if inline else "never"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        if not os.environ.get("NUMBA_CACHE_DIR"):
            path = fallback_cache_dir()
            os.environ["NUMBA_CACHE_DIR"] = path
            numba.config.CACHE_DIR = path  # numba read the environment at import time
            try:
                return numba.njit(cache=True, **options)(fn)
            except RuntimeError:
                pass
        logger.warning("The numba cache is unusable (%s); the fused kernel compiles in every process.", exc)
        return numba.njit(cache=False, **options)(fn)
