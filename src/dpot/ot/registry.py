"""The one registry of alignment methods (``ot.method``): name -> loss class.

``dpot.config.OTConfig.validate`` checks ``ot.method`` against it and :func:`dpot.ot.make_alignment_loss` builds
the loss from it, so a new method is one class decorated with :func:`register_method` (imported by ``dpot.ot``).
Every registered class is called ``loss(src: DomainFeatures, tgt: DomainFeatures) -> OTResult`` and exposes
``term_kinds``.
"""

from __future__ import annotations

from collections.abc import Callable

ALIGNMENT_METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: register an alignment loss class under ``ot.method=name`` (a name registers once)."""

    def add(cls: type) -> type:
        if name in ALIGNMENT_METHODS and ALIGNMENT_METHODS[name] is not cls:
            raise ValueError(f"alignment method {name!r} is registered twice")
        ALIGNMENT_METHODS[name] = cls
        return cls

    return add


def method_names() -> tuple[str, ...]:
    """The registered ``ot.method`` names, in registration order."""
    return tuple(ALIGNMENT_METHODS)


__all__ = ["ALIGNMENT_METHODS", "method_names", "register_method"]
