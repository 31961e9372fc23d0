"""Provider clients behind one protocol (:class:`syncd.providers.base.Provider`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import ProviderSettings
    from syncd.providers.base import Provider

__all__ = ["PROVIDER_TYPES", "build_provider"]

PROVIDER_TYPES = ("smsend", "sendhub")


def build_provider(settings: ProviderSettings, *, default_region: str = "IT", **options: Any) -> Provider:
    """The client for one configured account. ``options`` go to the client (e.g. ``transport``)."""
    if settings.type == "smsend":
        from syncd.providers.smsend import SmsendProvider

        return SmsendProvider(settings, default_region=default_region, **options)
    if settings.type == "sendhub":
        from syncd.providers.sendhub import SendHubProvider

        return SendHubProvider(settings, default_region=default_region, **options)
    raise ValueError(f"unknown provider type {settings.type!r}")
