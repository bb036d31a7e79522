"""The overview's figures from the services' own Prometheus metrics (pure: text
and scrape times in, figures out).

Counters become rates by comparing two scrapes of the same service: the newest
against the newest earlier one at least ``min_gap_s`` older (the console keeps a
few per service, see :class:`ScrapeHistory`). A counter that went down means the
service restarted: that interval gives no rate rather than a negative one."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from schemas.topics import ACCOUNT_TOPICS, TENANTS

CONSUMED = "loyalty_messages_consumed_total"
PUBLISHED = "loyalty_messages_published_total"
DEAD_LETTERED = "loyalty_messages_dead_lettered_total"
LAG = "loyalty_consumer_lag"
BACKLOG = "loyalty_outbox_backlog"
DECISION_TOPICS = ("offers.decisions", "credits.decisions")
TOPICS = (*ACCOUNT_TOPICS, TENANTS)
"""The logical topics (architecture): labels naming a physical topic (with the
deployment's ``LOYALTY_TOPIC_PREFIX``) are folded onto these."""


def logical(topic: str) -> str:
    """``topic`` without a topic prefix, if it ends in a known topic (or its ``.dlq``)."""
    for known in TOPICS:
        for name in (f"{known}.dlq", known):
            if topic == name or topic.endswith("." + name):
                return name
    return topic


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One service's metrics at one moment (``at``: a monotonic clock, seconds)."""

    service: str
    at: float
    samples: Mapping[tuple[str, Labels], float]

    @classmethod
    def parse(cls, service: str, at: float, text: str) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return cls(service, at, samples)

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed by one label's value."""
        out: dict[str, float] = {}
        for (n, labels), value in self.samples.items():
            if n == name:
                key = dict(labels).get(label, "")
                if label == "topic":
                    key = logical(key)
                out[key] = out.get(key, 0.0) + value
        return out

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples.items() if n == name)


class ScrapeHistory:
    """The last few scrapes of each service, to compute rates from."""

    def __init__(self, keep: int = 30) -> None:
        self._scrapes: dict[str, deque[Scrape]] = {}
        self._keep = keep

    def add(self, scrape: Scrape) -> Scrape | None:
        """Records ``scrape``; returns the one to compare it with (or None yet)."""
        earlier = self.before(scrape)
        self._scrapes.setdefault(scrape.service, deque(maxlen=self._keep)).append(scrape)
        return earlier

    def before(self, scrape: Scrape, min_gap_s: float = 2.0) -> Scrape | None:
        for old in reversed(self._scrapes.get(scrape.service, ())):
            if scrape.at - old.at >= min_gap_s:
                return old
        return None


@dataclass(frozen=True)
class TopicFigures:
    topic: str
    consumed: float
    """Messages read, total (the largest count of any one consuming service)."""
    consumed_per_s: float | None
    published: float
    """Messages the outbox relays published to it, total."""
    published_per_s: float | None
    dead_lettered: float


@dataclass(frozen=True)
class ServiceFigures:
    service: str
    up: bool
    lag: float = 0.0
    max_partition_lag: float = 0.0
    outbox_backlog: float = 0.0
    dead_lettered: float = 0.0


@dataclass(frozen=True)
class Overview:
    services: list[ServiceFigures]
    topics: list[TopicFigures]
    decisions_per_min: dict[str, float | None] = field(default_factory=dict)
    """Per decision topic: messages published a minute (None until two scrapes)."""
    window_s: float | None = None
    """The interval the rates are over (the shortest of the services')."""

    @property
    def dead_letters(self) -> float:
        return sum(s.dead_lettered for s in self.services)

    @property
    def rates_known(self) -> bool:
        return self.window_s is not None


def _rate(now: float, then: float | None, seconds: float | None) -> float | None:
    if then is None or not seconds or now < then:
        return None  # no earlier scrape, or a counter reset (a restart)
    return (now - then) / seconds


def overview(
    services: Iterable[str],
    scrapes: Mapping[str, tuple[Scrape, Scrape | None]],
) -> Overview:
    """Figures for each service (a missing scrape is a service that is down) and
    for each topic; ``scrapes`` maps a service to (newest, earlier or None)."""
    per_service = []
    for name in services:
        if name not in scrapes:
            per_service.append(ServiceFigures(name, up=False))
            continue
        now, _ = scrapes[name]
        lags = [v for (n, _), v in now.samples.items() if n == LAG]
        per_service.append(
            ServiceFigures(
                name,
                up=True,
                lag=sum(lags),
                max_partition_lag=max(lags, default=0.0),
                outbox_backlog=now.total(BACKLOG),
                dead_lettered=now.total(DEAD_LETTERED),
            )
        )
    consumed: dict[str, tuple[float, float | None]] = {}
    published: dict[str, list[tuple[float, float | None]]] = {}
    dead: dict[str, float] = {}
    windows = []
    for now, then in scrapes.values():
        gap = now.at - then.at if then is not None else None
        if gap:
            windows.append(gap)
        for topic, n in now.by(CONSUMED, "topic").items():
            rate = _rate(n, then.by(CONSUMED, "topic").get(topic) if then else None, gap)
            if topic not in consumed or n > consumed[topic][0]:
                consumed[topic] = (n, rate)
        for topic, n in now.by(PUBLISHED, "topic").items():
            rate = _rate(n, then.by(PUBLISHED, "topic").get(topic) if then else None, gap)
            published.setdefault(topic, []).append((n, rate))
        for topic, n in now.by(DEAD_LETTERED, "topic").items():
            dead[topic] = dead.get(topic, 0.0) + n
    topics = []
    for topic in sorted(set(consumed) | set(published) | set(dead)):
        c, c_rate = consumed.get(topic, (0.0, None))
        pubs = published.get(topic, [])
        p_rates = [r for _, r in pubs if r is not None]
        p_rate = sum(p_rates) if pubs and len(p_rates) == len(pubs) else None
        topics.append(
            TopicFigures(
                topic=topic,
                consumed=c,
                consumed_per_s=c_rate if topic in consumed else None,
                published=sum(n for n, _ in pubs),
                published_per_s=p_rate,
                dead_lettered=dead.get(topic, 0.0),
            )
        )
    by_topic = {t.topic: t for t in topics}
    decisions: dict[str, float | None] = {}
    for topic in DECISION_TOPICS:
        t = by_topic.get(topic)
        if t is None:  # nothing published there yet: none a minute, once we can tell
            decisions[topic] = 0.0 if windows else None
        else:
            decisions[topic] = t.published_per_s * 60 if t.published_per_s is not None else None
    return Overview(
        services=per_service,
        topics=topics,
        decisions_per_min=decisions,
        window_s=min(windows) if windows else None,
    )
