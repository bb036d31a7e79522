"""The committed AsyncAPI document is what the generator makes of the contracts, it
is a valid AsyncAPI 3.0 document, and it says what the system does: every topic the
runtime creates is a channel, every catalogued event a message, and the messages
the codec and the dead-letter path write match their schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import ConsumerRecord
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from schemas import CATALOG, Money
from schemas.asyncapi import DEAD_LETTER, DOC_PATH, PARTIES, render
from schemas.events import ClockTick, ClockTickData, InvoicePaid, InvoicePaidData
from schemas.topics import DLQ_SUFFIX, TENANTS
from services.insights.app import TOPICS as INSIGHTS_TOPICS
from services.ledger.app import TOPICS as LEDGER_TOPICS
from services.offers.app import TOPICS as OFFERS_TOPICS
from services.runtime.batch import UnitOfWork, headers_from_json
from services.runtime.codec import KafkaMessage, encode
from services.runtime.topics import TopicNames
from services.segmenter.app import TOPICS as SEGMENTER_TOPICS

SPEC = Path(__file__).parent.parent / "data" / "asyncapi-3.0.0.schema.json"
DOC_URI = "urn:loyalty:asyncapi"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
    return loaded


def test_committed_document_matches_the_generator() -> None:
    assert DOC_PATH.read_text() == render(), (
        "docs/asyncapi.yaml drifted: python -m schemas.asyncapi"
    )


def test_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    validator = Draft7Validator(json.loads(SPEC.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert not errors


def test_the_validator_refuses_a_broken_document(doc: dict[str, Any]) -> None:
    # the check above proves something only if a wrong document fails it
    validator = Draft7Validator(json.loads(SPEC.read_text()))
    broken = json.loads(json.dumps(doc))
    broken["operations"]["segmenter.receive.events.product"]["action"] = "consume"
    assert not validator.is_valid(broken)


def test_every_catalog_type_is_a_message_on_a_channel(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    on_channels = {name for ch in doc["channels"].values() for name in ch["messages"]}
    assert set(CATALOG) <= set(messages)
    assert set(CATALOG) <= on_channels
    assert set(messages) == on_channels, "a message no channel carries"


def test_every_topic_the_runtime_creates_is_a_channel(doc: dict[str, Any]) -> None:
    created = TopicNames("").all_topics(partitions=6)
    channels = doc["channels"]
    assert set(channels) == set(created)
    for topic, partitions in created.items():
        assert channels[topic]["address"] == "{prefix}" + topic
        assert channels[topic]["bindings"]["kafka"]["partitions"] == partitions
    assert all(
        channels[t]["messages"] == {DEAD_LETTER: _ref(DEAD_LETTER)}
        for t in created
        if t.endswith(DLQ_SUFFIX)
    )


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{name}"}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_reference_resolves_and_operations_use_their_channels_messages(
    doc: dict[str, Any],
) -> None:
    for ref in _refs(doc):
        _resolve(doc, ref)
    for name, op in doc["operations"].items():
        channel = op["channel"]["$ref"]
        assert op["messages"], name
        for message in op["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name


def test_receive_operations_are_what_the_services_subscribe_to(doc: dict[str, Any]) -> None:
    subscribed = {
        "segmenter": SEGMENTER_TOPICS,
        "offers": OFFERS_TOPICS,
        "ledger": LEDGER_TOPICS,
        "insights": INSIGHTS_TOPICS,
        "ingest": (),
    }
    for service, topics in subscribed.items():
        received = {
            op["channel"]["$ref"].removeprefix("#/channels/")
            for op in doc["operations"].values()
            if op["action"] == "receive" and op["tags"] == [{"name": service}]
        }
        assert received == {*topics, TENANTS, "loyalty.incarnation"}, service
    assert {p.name for p in PARTIES if p.service} == set(subscribed)


def _validator(doc: dict[str, Any], pointer: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT7)
    )
    return Draft7Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def _headers(msg: KafkaMessage) -> dict[str, str]:
    return {name: value.decode() for name, value in msg.headers}


AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
EVENTS = [
    InvoicePaid(
        id="e-1",
        source="billing",
        type="billing.invoice_paid",
        subject="acct-1",
        time=AT,
        tenant="acme",
        dataschema="urn:loyalty:event:billing.invoice_paid:v1",
        extensions={"traceparent": "00-abc-def-01"},
        data=InvoicePaidData(invoice_id="in-1", amount=Money(amount=50000, currency="USD")),
    ),
    ClockTick(
        id="t-1",
        source="loyalty/ticker",
        type="clock.tick",
        subject="~events.billing/3",
        time=AT,
        tenant="acme",
        data=ClockTickData(round=AT, topic="events.billing", partition=3, round_size=18),
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_what_the_codec_writes_matches_the_message(doc: dict[str, Any], event: Any) -> None:
    msg = encode(event)
    base = f"/components/messages/{event.type}"
    _validator(doc, base + "/headers").validate(_headers(msg))
    _validator(doc, base + "/payload").validate(json.loads(msg.value))
    key = doc["components"]["messageBindings"]["accountKey"]["kafka"]["key"]
    Draft7Validator(key).validate(msg.key.decode())


def test_the_header_schema_refuses_a_wrong_type(doc: dict[str, Any]) -> None:
    headers = _headers(encode(EVENTS[0]))
    validator = _validator(doc, "/components/messages/clock.tick/headers")
    assert not validator.is_valid(headers)
    del headers["ce_tenant"]
    assert not _validator(doc, "/components/messages/billing.invoice_paid/headers").is_valid(
        headers
    )


def test_a_dead_letter_matches_the_dead_letter_message(doc: dict[str, Any]) -> None:
    msg = encode(EVENTS[0])
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic="events.billing",
        partition=2,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=msg.key,
        value=b"not json",
        checksum=None,
        serialized_key_size=len(msg.key),
        serialized_value_size=8,
        headers=msg.headers,
    )
    uow = UnitOfWork(conn=None, names=TopicNames(""))  # type: ignore[arg-type]
    uow.dead_letter(record, "events.billing", "data is not JSON", "segmenter")
    [row] = uow._rows
    headers = {name: value.decode() for name, value in headers_from_json(row["headers"])}
    _validator(doc, f"/components/messages/{DEAD_LETTER}/headers").validate(headers)
    assert headers["dlq_source_offset"] == "41"
