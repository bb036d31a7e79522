"""Writes the AsyncAPI 3.0 document of every topic and message to ``docs/asyncapi.yaml``.

Run ``python -m schemas.asyncapi``;
``tests/unit/test_asyncapi.py`` fails when the committed document differs from
what this produces, and validates it against the official AsyncAPI 3.0.0 JSON
Schema.

Everything in the document comes from the contracts in ``schemas/``: the channels
from the topic constants (:mod:`schemas.topics`, which the runtime uses too), the
messages from the event catalog, each payload from its pydantic ``data`` model
(the same generator as ``schemas/json/``, with references into
``#/components/schemas``), and the ``ce_*`` headers from the
:class:`~schemas.events.Event` envelope's own fields. What this module adds by hand
is who writes and who reads each topic (:data:`PARTIES`, as ARCHITECTURE.md's flow
has it); the test checks the services' subscriptions against it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas.events import CATALOG, EXTENSION_NAME, Event, ExtensionValue
from schemas.generate import schema_id
from schemas.topics import (
    ACCOUNT_TOPICS,
    DEFAULT_PARTITIONS,
    DLQ_HEADERS,
    DLQ_REASON,
    DLQ_SUFFIX,
    INCARNATION,
    INPUT_TOPICS,
    KAFKA_ATTRIBUTES,
    KEY_FORMAT,
    TENANTS,
    TOPIC_FAMILIES,
    consumer_group,
)

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
DOC_VERSION = "1.0.0"
KAFKA_BINDING = "0.5.0"
SCHEMAS = "#/components/schemas/"

DEAD_LETTER = "deadLetter"
INCARNATION_MARKER = "incarnationMarker"

CHANNEL_SUMMARIES: dict[str, str] = {
    "events.product": "Product usage: logins, feature use, onboarding, seats.",
    "events.billing": "Billing: subscriptions, invoices, cancellations, credit redemptions.",
    "events.support": "Support: tickets and NPS answers.",
    "segments.changes": "Segment transitions of an account, with its features and RFM cell.",
    "offers.decisions": "Offers issued (or held out) and each step of their lifecycle.",
    "credits.decisions": "Final credit decisions for billing: granted, rejected, pending, expired.",
    "insights.signals": "Signals derived by insights, e.g. an account ready for a bundle.",
    TENANTS: "Tenant API keys, as hashes: every service folds them into its own table.",
    INCARNATION: "The incarnation marker of the current topic set.",
}
"""One line per logical topic (the dead-letter topics describe themselves)."""


@dataclass(frozen=True)
class Party:
    """Who writes or reads topics: a service of the engine or someone outside it."""

    name: str
    summary: str
    sends: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Topic -> the event types it writes there (empty: every type of the topic)."""
    receives: tuple[str, ...] = ()
    service: bool = False
    """A service of the engine: consumes in its group, folds ``tenants``, checks the
    incarnation, and dead-letters what it cannot take from each topic it reads."""


def _types(*families: str) -> tuple[str, ...]:
    return tuple(t for t in CATALOG if t.split(".", 1)[0] in families)


PARTIES: tuple[Party, ...] = (
    Party(
        "producers",
        "SaaS products sending their events straight onto Kafka (or over HTTP to ingest).",
        sends={t: _types(t.split(".", 1)[1]) for t in INPUT_TOPICS},
    ),
    Party(
        "ingest",
        "HTTP intake: validates CloudEvents, sets the tenant from the API key, produces"
        " with acks=all; writes watermarks for a time-ordered history and the key events"
        " of the keys API.",
        sends={
            **{t: (*_types(t.split(".", 1)[1]), "clock.watermark") for t in INPUT_TOPICS},
            TENANTS: _types("tenant"),
        },
        service=True,
    ),
    Party(
        "ticker",
        "The elected ticker (one instance of any service, by a Postgres advisory lock):"
        " a round of clock.tick records on every partition of the input topics.",
        sends={t: ("clock.tick",) for t in INPUT_TOPICS},
    ),
    Party(
        "segmenter",
        "Keeps account features, RFM scores and segment membership against event time.",
        sends={"segments.changes": ()},
        receives=INPUT_TOPICS,
        service=True,
    ),
    Party(
        "offers",
        "Program rules, triggers, holdouts, contact policy and the offer lifecycle.",
        sends={"offers.decisions": ()},
        receives=("segments.changes", *INPUT_TOPICS, "insights.signals"),
        service=True,
    ),
    Party(
        "ledger",
        "The double-entry credit ledger: caps, approvals, expiry, redemptions, liability.",
        sends={"credits.decisions": ()},
        receives=("offers.decisions", "events.billing", "segments.changes"),
        service=True,
    ),
    Party(
        "insights",
        "The read model: lift against holdouts, NRR, up-sell rate, bundles.",
        sends={"insights.signals": ()},
        receives=tuple(t for t in ACCOUNT_TOPICS if t != "insights.signals"),
        service=True,
    ),
    Party(
        "billing",
        "Billing systems: apply granted credits and report redemptions"
        " (billing.credit_applied) and the rest of billing's events.",
        sends={"events.billing": _types("billing")},
        receives=("credits.decisions",),
    ),
    Party(
        "operators",
        "People and tools: `loyalty tenants create` writes keys; dead letters are"
        " inspected (and replayed to their source topic) from the console and the CLI.",
        sends={TENANTS: ("tenant.key_added",)},
        receives=tuple(t + DLQ_SUFFIX for t in (*ACCOUNT_TOPICS, TENANTS)),
    ),
)
"""Every party and the topics it writes and reads, as ARCHITECTURE.md's flow says."""


def channel_topics() -> list[str]:
    """Every logical topic the system uses, dead letters included (as the runtime
    creates them)."""
    sources = [*ACCOUNT_TOPICS, TENANTS]
    return [*sources, INCARNATION, *(t + DLQ_SUFFIX for t in sources)]


def channel_types(topic: str) -> list[str]:
    """The catalogued event types that travel on a (non dead-letter) topic."""
    families = TOPIC_FAMILIES.get(topic, ())
    return [t for t in CATALOG if t.split(".", 1)[0] in families]


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    # a header is there or absent, never JSON null; titles only repeat the names
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    out = dict(options[0]) if len(options) == 1 else dict(schema)
    for name in ("title", "default"):
        out.pop(name, None)
    if "description" in schema:
        out["description"] = schema["description"]
    return out


def _envelope() -> dict[str, dict[str, Any]]:
    props: dict[str, dict[str, Any]] = Event.model_json_schema()["properties"]
    return {name: _clean(schema) for name, schema in props.items()}


def _headers_schema() -> dict[str, Any]:
    envelope = _envelope()
    properties: dict[str, Any] = {
        "content-type": {
            **envelope["datacontenttype"],
            "description": "CloudEvents `datacontenttype`. "
            + envelope["datacontenttype"]["description"],
        }
    }
    for name in (*KAFKA_ATTRIBUTES, "dataschema"):
        schema = dict(envelope[name])
        own = schema.pop("description", None)
        what = f"CloudEvents `{name}`" + (f": {own}" if own else ".")
        properties[f"ce_{name}"] = {**schema, "description": what}
    extension = TypeAdapter(ExtensionValue).json_schema()
    extension.pop("title", None)
    name_rule = EXTENSION_NAME.removeprefix("^").removesuffix("$")
    return {
        "type": "object",
        "description": "The event's CloudEvents attributes in Kafka binary mode: one"
        " `ce_<attribute>` header each, values UTF-8. Any other `ce_<name>` header is"
        " an extension attribute (e.g. `ce_traceparent`); headers without the prefix"
        " are not read.",
        "required": [f"ce_{name}" for name in KAFKA_ATTRIBUTES],
        "properties": properties,
        "patternProperties": {
            f"^ce_{name_rule}$": {
                **extension,
                "description": "An extension attribute, carried as a string.",
            }
        },
    }


def _key_schema() -> dict[str, Any]:
    envelope = _envelope()
    tenant = envelope["tenant"]["pattern"].removeprefix("^").removesuffix("$")
    account = envelope["subject"]["pattern"].removeprefix("^").removesuffix("$")
    return {
        "type": "string",
        "pattern": f"^{tenant}:{account}$",
        "description": f"`{KEY_FORMAT}`: the event's `tenant` and `subject`, so that one"
        " account's events stay in order in one partition. For a clock record the"
        " subject is the partition (`~<topic>/<n>`); on `tenants` it is the tenant.",
        "examples": ["acme:acct-42"],
    }


def _dead_letter_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The source record's headers, unchanged (for an event, its `ce_*`"
        " headers), followed by these.",
        "required": list(DLQ_HEADERS),
        "properties": {
            name: {"type": "string", "description": text} for name, text in DLQ_HEADERS.items()
        },
    }


def _payloads() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Event type -> payload reference, and every schema the payloads use."""
    data_models: dict[str, type[BaseModel]] = {
        event_type: model.model_fields["data"].annotation  # type: ignore[misc]
        for event_type, model in CATALOG.items()
    }
    unique = list(dict.fromkeys(data_models.values()))
    refs, defs = models_json_schema(
        [(m, "validation") for m in unique], ref_template=SCHEMAS + "{model}"
    )
    by_type = {t: refs[(m, "validation")] for t, m in data_models.items()}
    return by_type, defs.get("$defs", {})


def _doc_line(text: str | None) -> str | None:
    if not text:
        return None
    paragraph = text.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _message(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    model = CATALOG[event_type]
    data_model = model.model_fields["data"].annotation
    message: dict[str, Any] = {
        "name": event_type,
        "title": f"{model.__name__} (v{model.VERSION})",
    }
    summary = _doc_line(model.__doc__) if "__doc__" in model.__dict__ else None
    summary = summary or _doc_line(getattr(data_model, "__doc__", None))
    if summary:
        message["summary"] = summary
    message.update(
        {
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "allOf": [{"$ref": SCHEMAS + "CloudEventHeaders"}],
                "properties": {"ce_type": {"type": "string", "const": event_type}},
            },
            "payload": payload,
            # a reference to the bindings, not to the key: a key that is a $ref would be
            # valid both as a Schema and as a Reference, which the spec's oneOf refuses
            "bindings": {"$ref": "#/components/messageBindings/accountKey"},
            "tags": [{"name": event_type.split(".", 1)[0]}],
            "x-dataschema": schema_id(event_type, model),
        }
    )
    return message


def _messages() -> tuple[dict[str, Any], dict[str, Any]]:
    payloads, defs = _payloads()
    messages: dict[str, Any] = {t: _message(t, payloads[t]) for t in CATALOG}
    messages[DEAD_LETTER] = {
        "name": DEAD_LETTER,
        "title": "Dead letter",
        "summary": "A record a consumer could not take: not a CloudEvent, not JSON,"
        " failing its schema, from the future, or refused by its handler.",
        "description": "Key, value and headers are the source record's, byte for byte,"
        f" with the `dlq_*` headers added; `{DLQ_REASON}` says why. The value may be"
        " anything (a poison record need not be JSON); usually it is the source's"
        " CloudEvent unchanged.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": SCHEMAS + "DeadLetterHeaders"},
        "payload": {"description": "The source record's value, unchanged."},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": "The source record's key, unchanged (usually"
                    f" `{KEY_FORMAT}`; absent if it had none).",
                },
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }
    messages[INCARNATION_MARKER] = {
        "name": INCARNATION_MARKER,
        "title": "Incarnation marker",
        "summary": "A random id naming the current topic set; only the first record counts.",
        "description": "Written without key or headers by whoever creates the topics first."
        " A service that finds a different id than the one stored with its offsets knows"
        " the log they point into is gone (a restarted in-memory broker) and reads the"
        " new topics from the start.",
        "contentType": "text/plain",
        "payload": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "UUID hex."},
    }
    schemas = {
        "CloudEventHeaders": _headers_schema(),
        "DeadLetterHeaders": _dead_letter_headers(),
        **dict(sorted(defs.items())),
    }
    return messages, schemas


def _channel_messages(topic: str) -> list[str]:
    if topic == INCARNATION:
        return [INCARNATION_MARKER]
    if topic.endswith(DLQ_SUFFIX):
        return [DEAD_LETTER]
    return channel_types(topic)


def _partitions(topic: str) -> int:
    source = topic.removesuffix(DLQ_SUFFIX)
    return DEFAULT_PARTITIONS if source in ACCOUNT_TOPICS else 1


def _channel(topic: str) -> dict[str, Any]:
    source = topic.removesuffix(DLQ_SUFFIX)
    channel: dict[str, Any] = {"address": "{prefix}" + topic, "title": topic}
    if topic.endswith(DLQ_SUFFIX):
        channel["summary"] = f"Dead letters of `{source}`: what its consumers could not take."
        channel["description"] = (
            f"Written by any consumer of `{source}` (through its outbox, in the"
            " transaction that stores the offsets, so a dead letter is never lost nor"
            " written twice); the consumer goes on. Read by operators, who inspect the"
            " reasons and replay a record to its source topic after a fix."
        )
    else:
        channel["summary"] = CHANNEL_SUMMARIES[topic]
        if source in ACCOUNT_TOPICS:
            channel["description"] = (
                f"Keyed `{KEY_FORMAT}`; co-partitioned with every account topic"
                f" ({DEFAULT_PARTITIONS} partitions by default, `LOYALTY_PARTITIONS`)."
            )
    channel["parameters"] = {"prefix": {"$ref": "#/components/parameters/prefix"}}
    channel["messages"] = {
        name: {"$ref": f"#/components/messages/{name}"} for name in _channel_messages(topic)
    }
    partitions = _partitions(topic)
    channel["bindings"] = {"kafka": {"partitions": partitions, "bindingVersion": KAFKA_BINDING}}
    return channel


def _operation(
    party: Party, action: str, topic: str, messages: Sequence[str], summary: str
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{topic}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{topic}/messages/{m}"} for m in messages],
        "tags": [{"name": party.name}],
    }
    if action == "receive" and party.service:
        group = consumer_group(party.name)
        op["bindings"] = {
            "kafka": {
                "groupId": {
                    "type": "string",
                    "description": f"`{{prefix}}{group}`: one group per service.",
                    "examples": [group],
                },
                "bindingVersion": KAFKA_BINDING,
            }
        }
    return op


def _operations() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for party in PARTIES:
        for topic, types in party.sends.items():
            ops[f"{party.name}.send.{topic}"] = _operation(
                party, "send", topic, types or channel_types(topic), f"{party.name} writes."
            )
        receives = list(party.receives)
        if party.service:
            receives.append(TENANTS)
        for topic in receives:
            ops[f"{party.name}.receive.{topic}"] = _operation(
                party, "receive", topic, _channel_messages(topic), f"{party.name} reads."
            )
        if not party.service:
            continue
        for topic in receives:
            ops[f"{party.name}.send.{topic}{DLQ_SUFFIX}"] = _operation(
                party,
                "send",
                topic + DLQ_SUFFIX,
                [DEAD_LETTER],
                f"{party.name} dead-letters what it cannot take from `{topic}`.",
            )
        for action in ("send", "receive"):
            ops[f"{party.name}.{action}.{INCARNATION}"] = _operation(
                party,
                action,
                INCARNATION,
                [INCARNATION_MARKER],
                f"{party.name} "
                + ("writes the marker if there is none." if action == "send" else "reads it."),
            )
    return ops


def build() -> dict[str, Any]:
    """The AsyncAPI document as plain data."""
    messages, schemas = _messages()
    topics = channel_topics()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Loyalty engine: topics and events",
            "version": DOC_VERSION,
            "description": (
                "Every topic of the loyalty engine and every message on it. Each message"
                " is a CloudEvents 1.0 event in Kafka binary mode: the attributes travel"
                " as `ce_*` headers, `data` is the JSON value, the key is"
                f" `{KEY_FORMAT}`. A consumer treats a repeated `id` as already done.\n\n"
                "Topic names are logical: every one is prefixed by `LOYALTY_TOPIC_PREFIX`"
                " (the `prefix` channel parameter; empty by default), so that several"
                " environments can share one cluster. Operations are tagged with the"
                " party that performs them.\n\n"
                "Generated from `schemas/` by `python -m schemas.asyncapi`: do not edit."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster (Apache Kafka, Redpanda, MSK, Confluent, or"
                " the embedded broker of `loyalty up`). Security as configured by"
                " `LOYALTY_KAFKA_SECURITY_PROTOCOL` and the SASL/SSL settings.",
                "variables": {
                    "bootstrap": {
                        "default": "127.0.0.1:9092",
                        "description": "`LOYALTY_KAFKA_BOOTSTRAP`: the bootstrap servers.",
                    }
                },
            }
        },
        "channels": {topic: _channel(topic) for topic in topics},
        "operations": _operations(),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "messageBindings": {
                "accountKey": {"kafka": {"key": _key_schema(), "bindingVersion": KAFKA_BINDING}}
            },
            "parameters": {
                "prefix": {
                    "description": "`LOYALTY_TOPIC_PREFIX`, put before every topic name"
                    " (e.g. `staging.`); the consumer groups carry it too.",
                    "default": "",
                    "examples": ["", "staging."],
                }
            },
        },
    }


def render() -> str:
    """The document as committed: YAML, keys in a fixed order."""
    return yaml.safe_dump(build(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    path = Path(args[0]) if args else DOC_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
