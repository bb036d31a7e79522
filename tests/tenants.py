"""Tenants for tests: the consumers dead-letter every event of a tenant that was
never created, so a test that writes events onto the topics creates their tenant
first, as an operator would (``loyalty tenants create``)."""

from __future__ import annotations

from services.runtime.config import Settings
from services.runtime.tenants import key_added_event, new_api_key, publish_key_event
from services.runtime.topics import TopicNames


async def create_tenant(settings: Settings, name: str = "acme", key: str | None = None) -> str:
    """Creates the tenant ``name`` (its id: ``name`` in lowercase, see
    ``tenant_id_for``) with one admin key on the ``tenants`` topic, acknowledged by
    the broker before this returns; returns the key."""
    key = key or new_api_key()
    await publish_key_event(
        settings.kafka_bootstrap,
        TopicNames(settings.topic_prefix),
        settings.partitions,
        key_added_event(name, key),
    )
    return key
