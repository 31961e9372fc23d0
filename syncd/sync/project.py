"""Reconcile inputs for one provider: canonical and mirror records in its field space. Pure.

A :class:`Projection` says what one provider can hold; the engine builds it from
the provider's client (its ``project`` and capabilities), so nothing here knows
of clients, HTTP or the database.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from syncd.model import BaseRecord, Contact, Group, LocalRecord, RemoteContact, RemoteGroup, RemoteRecord

__all__ = ["Projection", "Selection", "contact_fields", "group_fields", "local_contacts", "local_groups", "remote_contacts",
           "remote_groups"]


@dataclass(frozen=True, slots=True)
class Projection:
    """What one provider can hold."""

    contact: Callable[[Contact], Mapping[str, Any]]
    """The canonical contact in the provider's field space (no groups, no opt-out)."""
    holds_opt_out: bool
    """The provider records opt-outs syncd writes (smsend's blacklist): the opt-out is then a field."""
    group_fields: frozenset[str]
    """The canonical group attributes the provider stores."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which canonical records one provider takes (``include_groups`` / ``exclude_groups``), by group key."""

    include: frozenset[str] | None = None  # None: every group
    exclude: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return self.include is None and not self.exclude

    def group(self, group: Group) -> bool:
        return (self.include is None or group.key in self.include) and group.key not in self.exclude

    def contacts(self, contacts: Mapping[int, Contact], groups: Mapping[int, Group]) -> dict[int, Contact]:
        """The contacts the provider takes, each with only the groups it takes."""
        if self.everything:
            return dict(contacts)
        taken = {gid for gid, g in groups.items() if self.group(g)}
        excluded = {gid for gid, g in groups.items() if g.key in self.exclude}
        out = {}
        for cid, contact in contacts.items():
            if contact.groups & excluded or (self.include is not None and not contact.groups & taken):
                continue
            out[cid] = replace(contact, groups=contact.groups & taken) if contact.groups - taken else contact
        return out


def contact_fields(provider: Projection, contact: Contact) -> dict[str, Any]:
    """The contact's projection, with its groups (canonical ids) and, where the provider holds it, its opt-out."""
    fields = dict(provider.contact(contact))
    fields["groups"] = sorted(contact.groups)
    if provider.holds_opt_out and contact.opted_out:
        fields["opted_out"] = True
    return fields


def group_fields(provider: Projection, name: str, description: str) -> dict[str, Any]:
    fields = {"name": name}
    if "description" in provider.group_fields and description:
        fields["description"] = description
    return fields


def local_contacts(provider: Projection, contacts: Mapping[int, Contact]) -> dict[int, LocalRecord]:
    with _collector_paused():
        return {cid: LocalRecord(cid, c.phone, contact_fields(provider, c), c.opted_out, c.updated_at)
                for cid, c in contacts.items()}


def local_groups(provider: Projection, groups: Mapping[int, Group]) -> dict[int, LocalRecord]:
    return {gid: LocalRecord(gid, g.key, group_fields(provider, g.name, g.description), False, g.updated_at)
            for gid, g in groups.items()}


def remote_contacts(provider: Projection, mirror: Mapping[str, RemoteContact],
                    group_links: Mapping[int, BaseRecord]) -> dict[str, RemoteRecord]:
    """Mirror contacts with their remote group ids translated to canonical ids (unlinked groups dropped)."""
    to_canonical = {link.remote_id: gid for gid, link in group_links.items()}
    reports_opt_out = not provider.holds_opt_out
    out: dict[str, RemoteRecord] = {}
    with _collector_paused():
        for rid, rc in mirror.items():
            fields = dict(rc.fields)
            fields["groups"] = sorted(to_canonical[g] for g in rc.groups if g in to_canonical)
            if not reports_opt_out and rc.opted_out:
                fields["opted_out"] = True
            out[rid] = RemoteRecord(rid, rc.phone, fields, rc.opted_out and reports_opt_out, rc.modified_at)
    return out


def remote_groups(provider: Projection, mirror: Mapping[str, RemoteGroup]) -> dict[str, RemoteRecord]:
    return {rid: RemoteRecord(rid, g.key, group_fields(provider, g.name, g.description), False, g.modified_at)
            for rid, g in mirror.items()}


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many records are built.

    A projection makes a few small objects per record and no reference cycles,
    but with 100,000 contacts in memory each burst of allocations sets off full
    collections that walk the whole heap and free nothing: over half of the
    projections' time in a 100k run. Nothing is lost: cycles made meanwhile
    elsewhere are collected once it is back on.
    """
    if not gc.isenabled():  # already paused (by a caller, or by another thread)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
