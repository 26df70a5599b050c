"""Prometheus metrics computed from the database at scrape time.

Counting in the database rather than in process-local counters keeps the numbers right
when the SCP, the HTTP server and several workers run in different processes.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import AuditEvent, Delivery, Instance, Job, OutboxMessage
from dicom_node.studies import aware


class NodeCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[object]:
        with self.sessions() as s:
            received = s.scalar(select(func.count(Instance.id))
                                .where(Instance.source != "result")) or 0
            closed = s.scalar(select(func.count(AuditEvent.id))
                              .where(AuditEvent.event_type == "study.closed")) or 0
            failures = s.scalar(select(func.count(AuditEvent.id)).where(
                AuditEvent.event_type.in_(("delivery.failed", "delivery.dead_lettered")))) or 0
            jobs = dict(s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state))
                        .all())
            pending = dict(s.execute(select(OutboxMessage.queue, func.count(OutboxMessage.id))
                                     .where(OutboxMessage.dispatched_at.is_(None))
                                     .group_by(OutboxMessage.queue)).all())
            deliveries = dict(s.execute(select(Delivery.status, func.count(Delivery.id))
                                        .group_by(Delivery.status)).all())
            spans = s.execute(select(Job.started_at, Job.finished_at).where(
                Job.state == "done", Job.finished_at.is_not(None)).order_by(Job.id.desc())
                .limit(10000)).all()
        yield CounterMetricFamily("lumbar_instances_received", "Instances received (C-STORE "
                                  "and STOW-RS), duplicates excluded", value=received)
        yield CounterMetricFamily("lumbar_studies_closed", "Studies closed for analysis",
                                  value=closed)
        yield CounterMetricFamily("lumbar_delivery_failures", "Failed delivery attempts",
                                  value=failures)
        durations = [(aware(b) - aware(a)).total_seconds() for a, b in spans if a and b]
        yield SummaryMetricFamily("lumbar_job_duration_seconds", "Analysis job wall time",
                                  count_value=len(durations), sum_value=sum(durations))
        g = GaugeMetricFamily("lumbar_jobs", "Jobs by state", labels=["state"])
        for state in ("queued", "running", "done", "failed"):
            g.add_metric([state], jobs.get(state, 0))
        yield g
        q = GaugeMetricFamily("lumbar_queue_depth", "Tasks waiting in the outbox plus jobs "
                              "queued but not started", labels=["queue"])
        q.add_metric(["gpu"], pending.get("gpu", 0) + jobs.get("queued", 0))
        q.add_metric(["io"], pending.get("io", 0))
        yield q
        d = GaugeMetricFamily("lumbar_deliveries", "Deliveries by status", labels=["status"])
        for status in ("queued", "pending", "sending", "delivered", "dead"):
            d.add_metric([status], deliveries.get(status, 0))
        yield d


class ReviewCollector(Collector):
    """Radiologists' agreement with the node per model version and finding, from the
    latest review of each finding (see dicom_node.feedback)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[object]:
        from dicom_node import feedback
        from dicom_node.db.models import Review

        with self.sessions() as s:
            verdicts = dict(s.execute(select(Review.verdict, func.count(Review.id))
                                      .group_by(Review.verdict)).all())
            report = feedback.agreement_report(feedback.all_reviews(s))
        c = CounterMetricFamily("lumbar_reviews", "Findings reviewed by radiologists",
                                labels=["verdict"])
        for verdict in ("confirm", "correct"):
            c.add_metric([verdict], verdicts.get(verdict, 0))
        yield c
        labels = ["model_version", "finding"]
        agree = GaugeMetricFamily("lumbar_review_agreement", "Share of reviewed findings "
                                  "where the radiologist agreed with the node", labels=labels)
        kappa = GaugeMetricFamily("lumbar_review_kappa", "Cohen's kappa between node and "
                                  "radiologists", labels=labels)
        count = GaugeMetricFamily("lumbar_review_pairs", "Reviewed findings the node graded",
                                  labels=labels)
        for version, groups in report["by_model"].items():
            for group, stats in groups.items():
                count.add_metric([version, group], stats["n"])
                if stats["agreement"] is not None:
                    agree.add_metric([version, group], stats["agreement"])
                if stats["kappa"] is not None:
                    kappa.add_metric([version, group], stats["kappa"])
        yield agree
        yield kappa
        yield count


def registry_for(sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(sessions))
    registry.register(ReviewCollector(sessions))
    return registry
