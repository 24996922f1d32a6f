"""Prometheus metrics, computed from the database at scrape time.

Counted from the tables, not in process memory, so one scrape of any web process
tells the truth about every worker process and survives their restarts.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from accounts.auth import client_address
from catalog.models import Hive
from provisioner.models import DownloadJob, NarrationEvent

# Seconds: from a small model on a LAN (seconds) to a 400 GB one over a slow link (hours).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class CatalogCollector:
    def collect(self) -> Iterator[Metric]:
        yield self.downloaded_bytes()
        yield self.jobs()
        yield self.queue_depth()
        yield self.job_duration()
        yield self.retries()
        yield self.verification_failures()
        yield from self.hive_disks()

    def downloaded_bytes(self) -> Metric:
        metric = CounterMetricFamily(
            "rbee_downloaded_bytes", "Bytes downloaded by jobs, by vendor, hive and source (origin or peer).",
            labels=["vendor", "hive", "source"],
        )
        # What no peer hive served came from the origin (see schemas.source_bytes).
        rows = DownloadJob.objects.values("vendor", "hive__name").annotate(
            total=Sum("bytes_done"), peers=Sum("bytes_from_peers")
        )
        for row in rows.order_by("vendor", "hive__name"):
            total, peers = row["total"] or 0, row["peers"] or 0
            metric.add_metric([row["vendor"], row["hive__name"], "origin"], max(0, total - peers))
            metric.add_metric([row["vendor"], row["hive__name"], "peer"], peers)
        return metric

    def jobs(self) -> Metric:
        metric = GaugeMetricFamily("rbee_jobs", "Download jobs by state and hive.", labels=["state", "hive"])
        counts = {(r["state"], r["hive__name"]): r["n"] for r in DownloadJob.objects.values("state", "hive__name").annotate(n=Count("pk"))}
        for hive in Hive.objects.values_list("name", flat=True):
            for state, _label in DownloadJob.STATE_CHOICES:
                metric.add_metric([state, hive], counts.get((state, hive), 0))
        return metric

    def queue_depth(self) -> Metric:
        metric = GaugeMetricFamily("rbee_queue_depth", "Jobs waiting for a worker, by hive.", labels=["hive"])
        rows = Hive.objects.annotate(n=Count("jobs", filter=Q(jobs__state=DownloadJob.QUEUED)))
        for hive in rows:
            metric.add_metric([hive.name], hive.n)
        return metric

    def job_duration(self) -> Metric:
        metric = HistogramMetricFamily(
            "rbee_job_duration_seconds", "Time from start to end of finished jobs, by hive and final state.",
            labels=["hive", "state"],
        )
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        finished = DownloadJob.objects.filter(
            state__in=DownloadJob.FINISHED_STATES, started_at__isnull=False, finished_at__isnull=False
        ).values_list("hive__name", "state", "started_at", "finished_at")
        for hive, state, started, ended in finished.iterator():
            if started and ended:
                durations[(hive, state)].append(max(0.0, (ended - started).total_seconds()))
        for (hive, state), values in sorted(durations.items()):
            buckets = [(str(float(le)), sum(1 for v in values if v <= le)) for le in DURATION_BUCKETS]
            metric.add_metric([hive, state], buckets + [("+Inf", len(values))], sum(values))
        return metric

    def retries(self) -> Metric:
        metric = CounterMetricFamily("rbee_download_retries", "Retried requests (model_download_retry events), by hive.", labels=["hive"])
        rows = NarrationEvent.objects.filter(action="model_download_retry", job__isnull=False)
        for row in rows.values("job__hive__name").annotate(n=Count("pk")).order_by("job__hive__name"):
            metric.add_metric([row["job__hive__name"]], row["n"])
        return metric

    def verification_failures(self) -> Metric:
        metric = CounterMetricFamily(
            "rbee_verification_failures", "Jobs failed because a file did not match its checksum or size, by hive.",
            labels=["hive"],
        )
        rows = DownloadJob.objects.filter(state=DownloadJob.FAILED, error_kind="verification")
        for row in rows.values("hive__name").annotate(n=Count("pk")).order_by("hive__name"):
            metric.add_metric([row["hive__name"]], row["n"])
        return metric

    def hive_disks(self) -> Iterator[Metric]:
        free = GaugeMetricFamily("rbee_hive_free_bytes", "Free bytes on a hive's models volume.", labels=["hive"])
        total = GaugeMetricFamily("rbee_hive_total_bytes", "Size of a hive's models volume.", labels=["hive"])
        online = GaugeMetricFamily("rbee_hive_online", "1 while a hive's worker heartbeats.", labels=["hive"])
        for hive in Hive.objects.all():
            size, space = hive.disk_space()
            if space is not None:
                free.add_metric([hive.name], space)
            if size is not None:
                total.add_metric([hive.name], size)
            online.add_metric([hive.name], 1 if hive.is_online() else 0)
        yield from (free, total, online)


registry = CollectorRegistry(auto_describe=False)
registry.register(CatalogCollector())


def may_scrape(request: HttpRequest) -> bool:
    """RBEE_METRICS_TOKEN as a bearer token, or an address in RBEE_METRICS_ALLOW."""
    header = request.headers.get("Authorization", "")
    token = settings.RBEE_METRICS_TOKEN
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.RBEE_METRICS_ALLOW)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        return HttpResponse("metrics: a token or an allowed address is needed\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
