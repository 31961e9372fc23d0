"""Provider clients behind one protocol (:class:`syncd.providers.base.Provider`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import ProviderSettings
    from syncd.providers.base import Provider

__all__ = ["build_provider"]


def build_provider(settings: ProviderSettings, *, default_region: str = "IT", **options: Any) -> Provider:
    """The client for one configured account (one of ``config.PROVIDER_TYPES``).

    ``options`` go to the client (e.g. ``transport``). Raises ``ValueError`` for
    a type no client serves, and :class:`~syncd.errors.ConfigError` when the
    settings hold no complete credential set.
    """
    if settings.type == "smsend":
        from syncd.providers.smsend import SmsendProvider

        return SmsendProvider(settings, default_region=default_region, **options)
    if settings.type == "sendhub":
        from syncd.providers.sendhub import SendHubProvider

        return SendHubProvider(settings, default_region=default_region, **options)
    raise ValueError(f"unknown provider type {settings.type!r}")
