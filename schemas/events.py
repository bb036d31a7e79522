"""The event catalog.

Every message in the system is a CloudEvents 1.0 event. On Kafka it travels in
binary mode (attributes as ``ce_*`` headers, ``data`` as the JSON value); over HTTP
it is a CloudEvents JSON object. Each event type is one frozen model whose
``type`` is a literal, so that :data:`EVENT_ADAPTER` can validate any event in one
call and pick the model by its type.

``subject`` is the account id and ``tenant`` the tenant id (a CloudEvents
extension attribute set by ingest from the API key, never by the sender).
Money is integer minor units plus an ISO 4217 currency code.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)

SPECVERSION: Literal["1.0"] = "1.0"

Identifier = Annotated[str, Field(min_length=1, max_length=200)]
TenantId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
AccountId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^:\s][^\s]*$")]


class Contract(BaseModel):
    """Base of every contract model: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Money(Contract):
    """An exact amount: integer minor units (cents) and an ISO 4217 currency.

    ``amount`` is strict on every path, lax validation included: a JSON string
    (``"100"``), a float (``100.0``) or a boolean is refused, never coerced, so
    that a sender's rounding or typing slip cannot become money."""

    amount: int = Field(strict=True, description="Integer minor units, e.g. 50000 for 500.00 USD.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD.")


# ---------------------------------------------------------------- data payloads


class SubscriptionUpdatedData(Contract):
    plan: Identifier
    interval: Literal["month", "year"]
    seats_purchased: int = Field(ge=0)
    mrr: Money
    renewal_date: date
    status: Literal["trialing", "active", "past_due", "paused", "canceled"]


class InvoicePaidData(Contract):
    invoice_id: Identifier
    amount: Money


class CancellationRequestedData(Contract):
    reason: str | None = Field(default=None, max_length=2000)


class CreditAppliedData(Contract):
    credit_id: Identifier
    invoice_id: Identifier
    amount: Money


class LoginData(Contract):
    user_id: Identifier


class FeatureUsedData(Contract):
    user_id: Identifier
    feature: Identifier
    key_action: bool = False


class OnboardingCompletedData(Contract):
    user_id: Identifier


class SeatsChangedData(Contract):
    seats_used: int = Field(ge=0)


class TicketOpenedData(Contract):
    ticket_id: Identifier
    priority: Literal["low", "normal", "high", "urgent"]


class TicketClosedData(Contract):
    ticket_id: Identifier


class NpsSubmittedData(Contract):
    user_id: Identifier
    score: int = Field(ge=0, le=10)


class AccountFeatures(Contract):
    """The account facts a segment transition carries for downstream rules.

    All but the seat counts are optional so that producers of older versions stay
    valid; the segmenter fills every field it knows.
    """

    seats_purchased: int = Field(ge=0)
    seats_used: int = Field(ge=0)
    mrr: Money | None = None
    arr: Money | None = None
    plan: str | None = None
    interval: Literal["month", "year"] | None = None
    subscription_status: str | None = None
    renewal_date: date | None = None
    days_to_renewal: int | None = None
    paid_months: int | None = None
    tenure_days: int | None = None
    membership: Literal["non_member", "new", "active", "expired"] | None = None
    onboarding_completed: bool | None = None
    key_actions_30d: int | None = None
    active_days_30d: int | None = None
    active_day_streak: int | None = None
    weekly_streak: int | None = None
    features_adopted: list[str] | None = None
    last_nps: int | None = None
    open_tickets: int | None = None
    cancellation_requested: bool | None = None


class RfmScores(Contract):
    """Quintile scores 1-5 (5 best) and the named RFM group."""

    r: int = Field(ge=1, le=5)
    f: int = Field(ge=1, le=5)
    m: int = Field(ge=1, le=5)
    cell: str


class SegmentChangedData(Contract):
    segment: Identifier
    features: AccountFeatures
    rfm: RfmScores | None = None
    as_of: date | None = Field(default=None, description="The stream day it was evaluated at.")
    user_id: str | None = Field(default=None, description="The user whose action caused it.")
    segments: list[str] = Field(
        default_factory=list, description="Every segment the account is in after the change."
    )
    cause: str | None = Field(
        default=None,
        description="What caused it: the id of the event, or `<account>/day/<n>` for a new"
        " stream day. Transitions with one cause are one moment for the offers service.",
    )


class Reward(Contract):
    """What an offer gives. ``cost`` is the discount-equivalent value the ledger caps."""

    kind: Literal[
        "service_credit",
        "renewal_credit",
        "discount",
        "pause",
        "downgrade",
        "beta_access",
        "training",
        "feature_pass",
        "council_access",
    ]
    value: Money | None = Field(
        default=None, description="What the customer gets, for credits and discounts."
    )
    cost: Money = Field(description="Discount-equivalent cost; zero is allowed.")
    days: int | None = Field(
        default=None, ge=1, description="How long a pass, pause or access lasts, if it does."
    )


REWARD_KINDS: tuple[str, ...] = get_args(Reward.model_fields["kind"].annotation)
MONETARY_REWARDS = ("service_credit", "renewal_credit")
"""Rewards whose value is credit the customer can spend (the ledger grants these)."""


class Competitor(Contract):
    """A rule that also matched the moment but did not win it."""

    rule: Identifier
    outcome: Literal["lost", "suppressed"]
    reason: str


class Explanation(Contract):
    """Why a decision was taken: the trigger, the facts the rule read, the rivals."""

    trigger: str
    facts: dict[str, Any] = Field(default_factory=dict)
    competitors: list[Competitor] = Field(default_factory=list)


class AccountContext(Contract):
    """The account as the offers service saw it when it decided: what the ledger's
    caps read (ARR for the per-account cap, segments for the usage tier)."""

    arr: Money | None = None
    segments: list[str] = Field(default_factory=list)


class OfferIssuedData(Contract):
    offer_id: Identifier
    rule: Identifier
    reward: Reward
    user_id: str | None = None
    expires_at: AwareDatetime | None = None
    reason: str = Field(description="Why the offer was made, for people.")
    explanation: Explanation | None = None
    holdout: bool = Field(
        default=False, description="True on offer.held_out: recorded, never delivered."
    )
    account: AccountContext | None = Field(
        default=None, description="The account's ARR and segments at the decision."
    )


class OfferStatusData(Contract):
    """A step of an offer's lifecycle after it was issued."""

    offer_id: Identifier
    rule: Identifier
    status: Literal["accepted", "declined", "expired", "redeemed"]
    actor: str | None = Field(default=None, description="Who accepted or declined, if said.")
    comment: str | None = Field(default=None, max_length=2000)


class CreditGrantedData(Contract):
    """A final grant. ``amount`` is the credit billing may apply (zero for a reward
    that is not credit); ``cost`` is its discount-equivalent cost, booked either way."""

    credit_id: Identifier
    offer_id: Identifier
    amount: Money
    expires_at: AwareDatetime | None = None
    kind: str | None = Field(default=None, description="The reward kind.")
    cost: Money | None = None
    approval_id: str | None = Field(default=None, description="Set when a human approved it.")
    actor: str | None = None
    comment: str | None = Field(default=None, max_length=2000)


class CreditRejectedData(Contract):
    """A final refusal: the cap that bound and the headroom it had left, or the
    approver who said no."""

    offer_id: Identifier
    amount: Money
    reason: str
    kind: str | None = None
    cost: Money | None = None
    cap: str | None = Field(default=None, description="The cap that bound, if one did.")
    headroom: Money | None = Field(default=None, description="What that cap had left.")
    approval_id: str | None = None
    actor: str | None = None
    comment: str | None = Field(default=None, max_length=2000)


class CreditPendingApprovalData(Contract):
    """A grant waiting for a human; followed by credit.granted or credit.rejected."""

    approval_id: Identifier
    offer_id: Identifier
    amount: Money
    kind: str
    cost: Money
    reason: str = Field(description="The threshold that asked for approval.")
    expires_at: AwareDatetime = Field(description="Rejected if nobody decides by then.")


class CreditExpiredData(Contract):
    """What was left of a credit when it expired: breakage, no longer billable."""

    credit_id: Identifier
    offer_id: Identifier
    amount: Money = Field(description="The part that expired (granted minus redeemed).")
    expires_at: AwareDatetime


class ClockTickData(Contract):
    """Stream time on one partition: written by the elected ticker to every partition
    of the input topics, once a round, so that time moves without traffic."""

    round: AwareDatetime = Field(description="The round's time; also the event's time.")
    topic: str = Field(description="The logical topic the tick was written to.")
    partition: int = Field(ge=0)
    round_size: int = Field(ge=1, description="How many ticks the round wrote for the tenant.")


class ClockWatermarkData(Contract):
    """A sender's promise, written by ingest for a time-ordered history to every
    partition of the input topics: no event of the tenant older than ``watermark``
    follows on this partition."""

    watermark: AwareDatetime
    topic: str = Field(description="The logical topic the watermark was written to.")
    partition: int = Field(ge=0)
    partitions: int = Field(ge=1, description="How many partitions it was written to.")


class BundleReadyData(Contract):
    """An account that adopted ``adopted`` and not yet ``expected``, now as long
    after its adoption as accounts that went on to ``expected`` typically took:
    the moment to offer the bundle. Published by insights on
    ``insights.signals``, once per account and sequence."""

    sequence: str = Field(
        min_length=3, max_length=401, description="'adopted>expected', e.g. 'reports>automations'."
    )
    adopted: Identifier = Field(description="The feature the account adopted first.")
    expected: Identifier = Field(description="The feature it is expected to adopt next.")
    adopted_at: AwareDatetime = Field(description="When it adopted ``adopted``.")
    typical_delay_days: float = Field(
        ge=0, description="Median delay from ``adopted`` to ``expected`` among accounts that did."
    )
    support: float = Field(ge=0, le=1, description="Share of adopting accounts that did A then B.")
    confidence: float = Field(ge=0, le=1, description="Share of A's adopters that went on to B.")


Scope = Literal["ingest", "read", "approve", "admin"]
"""What a key may do: ``ingest`` posts events; ``read`` reads the APIs and
reports; ``approve`` also decides approvals; ``admin`` does everything, keys and
dead letters included."""


class TenantKeyAddedData(Contract):
    """A tenant API key, stored as a SHA-256 hash; the key itself never travels."""

    name: str = Field(min_length=1, max_length=200, description="The tenant's name.")
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{12}$",
        description="Names the key in lists, revocations and audits (not secret).",
    )
    scope: Scope = Field(default="admin", description="Keys from before scopes are admin keys.")
    holder: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The person or system holding the key: what audits record.",
    )


class TenantKeyRevokedData(Contract):
    """A key that no service accepts any more."""

    key_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    by: str = Field(min_length=1, max_length=200, description="Who revoked it.")
    reason: str | None = Field(default=None, max_length=2000)


# ---------------------------------------------------------------- events


EXTENSION_NAME = r"^[a-z0-9]{1,20}$"
"""The CloudEvents naming rule for attributes (lowercase a-z and 0-9); the spec
recommends at most 20 characters, which this system requires."""

MAX_EXTENSION_VALUE = 2048


def _extension_value(value: Any) -> Any:
    # The CloudEvents type system carried as strings, as the Kafka and HTTP binary
    # modes carry them: a Boolean is "true"/"false", an Integer its decimal digits.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


ExtensionName = Annotated[str, Field(pattern=EXTENSION_NAME)]
ExtensionValue = Annotated[
    str,
    BeforeValidator(_extension_value),
    Field(max_length=MAX_EXTENSION_VALUE, pattern=r"^[^\x00-\x1f\x7f]*$"),
]
JsonMediaType = Annotated[
    str,
    Field(
        max_length=200,
        pattern=r"^(application|text)/([a-z0-9!#$&^_.\-]+\+)?json( *;[ -~]*)?$",
        description="A JSON media type: application/json, text/json or application/*+json,"
        " with parameters; this system carries JSON data only. Type and subtype in"
        " lowercase (ingest lowercases them).",
    ),
]
UriString = Annotated[
    str, Field(min_length=1, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]*$")
]


def _cloudevent_json_schema(schema: dict[str, Any]) -> None:
    # On the wire extension attributes sit beside the spec's, not in an object.
    # Not patternProperties: the naming rule matches the spec's own names too, and
    # would bind them (data would have to be a string and an object at once);
    # additionalProperties applies to the names that are no attribute only.
    schema.get("properties", {}).pop("extensions", None)
    schema["propertyNames"] = {"pattern": EXTENSION_NAME}
    schema["additionalProperties"] = {
        "description": "An extension attribute (e.g. traceparent); carried as a string.",
        "type": ["string", "integer", "boolean"],
    }


class Event(Contract):
    """A CloudEvents 1.0 event (the attributes this system uses).

    Attributes the spec does not define are extension attributes (``traceparent``,
    ``tracestate``, ...): validated by the spec's naming rule and kept, as strings, in
    :attr:`extensions`; in a dump (the structured JSON form) they sit beside the
    spec's attributes again, as CloudEvents puts them, and an unset ``dataschema``
    is left out. ``tenant`` is the system's own extension, always set by ingest.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra=_cloudevent_json_schema
    )

    VERSION: ClassVar[int] = 1

    specversion: Literal["1.0"] = SPECVERSION
    id: Identifier = Field(description="Unique per tenant; a repeated id is already done.")
    source: Annotated[str, Field(min_length=1, max_length=500)]
    type: str
    subject: AccountId = Field(description="The account id.")
    time: AwareDatetime = Field(description="Event time (RFC 3339).")
    tenant: TenantId = Field(description="Extension attribute, set from the API key.")
    datacontenttype: JsonMediaType = "application/json"
    dataschema: UriString | None = Field(default=None, description="The URI of data's schema.")
    extensions: dict[ExtensionName, ExtensionValue] = Field(
        default_factory=dict,
        description="Extension attributes by name (read-only); beside the others on the wire.",
    )
    data: Any

    @model_validator(mode="before")
    @classmethod
    def _gather_extensions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # an attribute that is no field but has an extension's name is one; any other
        # unknown key stays where it is, for extra="forbid" to refuse by its name
        fields = cls.model_fields
        named = [
            k
            for k in value
            if k not in fields and isinstance(k, str) and re.fullmatch(EXTENSION_NAME, k)
        ]
        given = value.get("extensions", {})
        if not named or not isinstance(given, dict):
            return value
        out = {k: v for k, v in value.items() if k not in named}
        out["extensions"] = {**given, **{k: value[k] for k in named}}
        return out

    @model_serializer(mode="wrap")
    def _place_extensions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        extensions = out.pop("extensions", None) or {}
        if "dataschema" in out and out["dataschema"] is None:
            del out["dataschema"]
        return {**out, **extensions}

    @property
    def key(self) -> str:
        """Kafka key: ``{tenant}:{account}`` keeps one account's events ordered."""
        return f"{self.tenant}:{self.subject}"


class SubscriptionUpdated(Event):
    type: Literal["billing.subscription_updated"]
    data: SubscriptionUpdatedData


class InvoicePaid(Event):
    type: Literal["billing.invoice_paid"]
    data: InvoicePaidData


class CancellationRequested(Event):
    type: Literal["billing.cancellation_requested"]
    data: CancellationRequestedData


class CreditApplied(Event):
    type: Literal["billing.credit_applied"]
    data: CreditAppliedData


class Login(Event):
    type: Literal["product.login"]
    data: LoginData


class FeatureUsed(Event):
    type: Literal["product.feature_used"]
    data: FeatureUsedData


class OnboardingCompleted(Event):
    type: Literal["product.onboarding_completed"]
    data: OnboardingCompletedData


class SeatsChanged(Event):
    type: Literal["product.seats_changed"]
    data: SeatsChangedData


class TicketOpened(Event):
    type: Literal["support.ticket_opened"]
    data: TicketOpenedData


class TicketClosed(Event):
    type: Literal["support.ticket_closed"]
    data: TicketClosedData


class NpsSubmitted(Event):
    type: Literal["support.nps_submitted"]
    data: NpsSubmittedData


class SegmentEntered(Event):
    type: Literal["segment.entered"]
    data: SegmentChangedData


class SegmentExited(Event):
    type: Literal["segment.exited"]
    data: SegmentChangedData


class OfferIssued(Event):
    type: Literal["offer.issued"]
    data: OfferIssuedData


class OfferHeldOut(Event):
    """An offer that would have been issued to an account of the holdout group."""

    type: Literal["offer.held_out"]
    data: OfferIssuedData


class OfferAccepted(Event):
    type: Literal["offer.accepted"]
    data: OfferStatusData


class OfferDeclined(Event):
    type: Literal["offer.declined"]
    data: OfferStatusData


class OfferExpired(Event):
    type: Literal["offer.expired"]
    data: OfferStatusData


class OfferRedeemed(Event):
    type: Literal["offer.redeemed"]
    data: OfferStatusData


class CreditGranted(Event):
    type: Literal["credit.granted"]
    data: CreditGrantedData


class CreditRejected(Event):
    type: Literal["credit.rejected"]
    data: CreditRejectedData


class CreditPendingApproval(Event):
    type: Literal["credit.pending_approval"]
    data: CreditPendingApprovalData


class CreditExpired(Event):
    type: Literal["credit.expired"]
    data: CreditExpiredData


class ClockTick(Event):
    """Not an account's event: ``subject`` names the partition (``~<topic>/<n>``)."""

    type: Literal["clock.tick"]
    data: ClockTickData


class ClockWatermark(Event):
    """Not an account's event: ``subject`` names the partition (``~<topic>/<n>``)."""

    type: Literal["clock.watermark"]
    data: ClockWatermarkData


class BundleReady(Event):
    """Insights' signal that an account is ready for a bundle (``insights.signals``)."""

    type: Literal["bundle.ready"]
    data: BundleReadyData


class TenantKeyAdded(Event):
    """On the ``tenants`` topic; ``subject`` and ``tenant`` are the tenant id."""

    type: Literal["tenant.key_added"]
    data: TenantKeyAddedData


class TenantKeyRevoked(Event):
    """On the ``tenants`` topic; ``subject`` and ``tenant`` are the tenant id."""

    type: Literal["tenant.key_revoked"]
    data: TenantKeyRevokedData


AnyEvent = Annotated[
    SubscriptionUpdated
    | InvoicePaid
    | CancellationRequested
    | CreditApplied
    | Login
    | FeatureUsed
    | OnboardingCompleted
    | SeatsChanged
    | TicketOpened
    | TicketClosed
    | NpsSubmitted
    | SegmentEntered
    | SegmentExited
    | OfferIssued
    | OfferHeldOut
    | OfferAccepted
    | OfferDeclined
    | OfferExpired
    | OfferRedeemed
    | CreditGranted
    | CreditRejected
    | CreditPendingApproval
    | CreditExpired
    | ClockTick
    | ClockWatermark
    | BundleReady
    | TenantKeyAdded
    | TenantKeyRevoked,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
"""Validates any catalogued event; built once."""

CATALOG: dict[str, type[Event]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (
        SubscriptionUpdated,
        InvoicePaid,
        CancellationRequested,
        CreditApplied,
        Login,
        FeatureUsed,
        OnboardingCompleted,
        SeatsChanged,
        TicketOpened,
        TicketClosed,
        NpsSubmitted,
        SegmentEntered,
        SegmentExited,
        OfferIssued,
        OfferHeldOut,
        OfferAccepted,
        OfferDeclined,
        OfferExpired,
        OfferRedeemed,
        CreditGranted,
        CreditRejected,
        CreditPendingApproval,
        CreditExpired,
        ClockTick,
        ClockWatermark,
        BundleReady,
        TenantKeyAdded,
        TenantKeyRevoked,
    )
}
"""Event type -> model."""

INGESTIBLE_FAMILIES = ("product", "billing", "support")
"""Type families that producers may send; ``product.x`` goes to ``events.product``."""


def topic_family(event_type: str) -> str | None:
    """The ``events.<family>`` a producer event type belongs to, or None."""
    family = event_type.split(".", 1)[0]
    return family if family in INGESTIBLE_FAMILIES else None
