"""Starting a hive's worker: embedded inside the web process, or as its own process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, connections

from catalog.models import Hive
from provisioner import running
from provisioner.disks import run_periodic_checks
from provisioner.fit import detect_gpus
from provisioner.models import this_process
from provisioner.narration import remember_server_loop
from provisioner.peers import PeerServer
from provisioner.recovery import (
    adopt_waiting_jobs,
    hand_back_jobs,
    recover_hive,
    remove_orphan_partials,
    requeue_jobs,
)

logger = logging.getLogger(__name__)

# Seconds a hive worker waits before it asks a database it lost for work again.
DATABASE_RETRY_S = 5.0


def start_embedded_worker() -> HiveHeartbeat | None:
    """The web process is the local hive's only worker: repair, then requeue all.

    A graceful stop (SIGTERM, Ctrl-C) hands the running downloads back before the
    server goes, so the next start resumes them from the bytes on disk.
    """
    _hand_back_on_server_stop()
    try:
        # RBEE_MODELS_DIR is where this machine keeps models now; entries keep their paths.
        hive = Hive.register(settings.RBEE_HIVE, settings.RBEE_MODELS_DIR, current=True)
        requeued = recover_hive(hive, sole_worker=True)
        hive.beat()
        heartbeat = HiveHeartbeat(hive, embedded=True)
        heartbeat.start()
        if requeued:
            logger.info("requeued %d unfinished download(s): %s", len(requeued), requeued)
        return heartbeat
    except Exception:
        # A database that is not migrated yet must not stop the server from starting.
        logger.exception("could not recover the local hive at start")
        return None
    finally:
        close_old_connections()


def _hand_back_on_server_stop() -> None:
    """Under daphne (Twisted), stop the running jobs before the reactor shuts down.

    The trigger returns a Deferred that fires once the jobs have handed themselves
    back: the event loop keeps running meanwhile, so their narration still reaches
    the browsers, and the interpreter only exits after the job rows say "queued".
    """
    if "twisted.internet.reactor" not in sys.modules:
        return  # not served by daphne (a test's ASGI client): nothing to hook into
    from twisted.internet import reactor, threads

    def stop_jobs() -> object:
        return threads.deferToThread(_stop_jobs)

    reactor.addSystemEventTrigger("before", "shutdown", stop_jobs)  # type: ignore[attr-defined,arg-type]


def _stop_jobs() -> None:
    try:
        if stopped := running.stop_all():
            logger.info("handed job(s) %s back for the next start", stopped)
    finally:
        connections.close_all()


def start_push_loop() -> None:
    """Give narrate() one event loop for its channel-layer pushes in this process.

    A hive worker has no server loop; without one every push goes through
    async_to_sync, which makes a thread, an event loop and a Redis connection per
    message (about 4 ms). narrate() hands messages to a registered loop instead, as
    in the web process, and channels-redis keeps one connection pool on it.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        remember_server_loop(loop)  # from this thread: pushes come from the others
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, name="channel-layer-loop", daemon=True).start()
    ready.wait(timeout=5)


class WorkerStopping(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread, where the download runs.

    A KeyboardInterrupt, so the download unwinds as on Ctrl-C: psycopg cancels a query
    in flight, transactions roll back, and the job's ``except Exception`` handlers do
    not record a failure or delete the partial files the resume needs.
    """


class HiveHeartbeat(threading.Thread):
    """Tells the dashboard the hive is up, and hands dead workers' jobs to live ones.

    Every ``RBEE_HEARTBEAT_S``: the hive's heartbeat and free disk, the disk checks
    that are due (update checks, verifies), then a requeue of
    its running jobs whose heartbeat stopped (a worker killed mid-download), so the
    next live worker of the hive resumes them from the bytes on disk.
    """

    def __init__(self, hive: Hive, *, embedded: bool = False, peer_url: str | None = None) -> None:
        super().__init__(name=f"hive-{hive.name}-heartbeat", daemon=True)
        self.hive = hive
        self.embedded = embedded
        self.peer_url = peer_url
        self.stopping = threading.Event()
        self.gpus: list[dict[str, object]] | None = None  # looked up at the first beat, in this thread

    def run(self) -> None:
        try:
            while not self.stopping.wait(settings.RBEE_HEARTBEAT_S):
                self.beat()
        finally:
            connection.close()

    def beat(self) -> None:
        try:
            if self.gpus is None:
                self.gpus = detect_gpus()
            self.hive.beat(gpus=self.gpus, peer_url=self.peer_url)
            if self.embedded:
                # The queue is this process's memory: jobs that reached the table from
                # elsewhere (the command line) are sent to it here.
                if adopted := adopt_waiting_jobs(self.hive, set(running.sent)):
                    logger.info("running waiting job(s) %s of hive %s", adopted, self.hive)
            elif requeued := requeue_jobs(self.hive, sole_worker=False):
                logger.warning("requeued job(s) %s of hive %s: their worker stopped heartbeating", requeued, self.hive)
            remove_orphan_partials(self.hive)
            # Last, so a slow source never delays the requeues: the due update checks and
            # verifies (each at most every RBEE_UPDATE_CHECK_S / RBEE_VERIFY_EVERY_S).
            run_periodic_checks(self.hive)
        except Exception:
            logger.exception("heartbeat of hive %s failed", self.hive)
        finally:
            close_old_connections()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def start_peer_server(hive: Hive) -> PeerServer | None:
    """Serve the hive's verified files to the other hives on RBEE_PEER_LISTEN.

    A second worker of the same hive on the same machine finds the port taken: the
    first one serves the same disk, so it carries on without its own server.
    """
    try:
        server = PeerServer(hive, settings.RBEE_PEER_LISTEN).start()
    except OSError as exc:
        logger.warning("not serving peers on %s: %s", settings.RBEE_PEER_LISTEN, exc.strerror or exc)
        return None
    logger.info("serving hive %s's files to peers on %s as %s", hive, settings.RBEE_PEER_LISTEN, server.advertised_url())
    return server


def run_hive_worker(hive: Hive, *, interval: float = 1.0) -> None:
    """Consume the hive's queue with django-tasks-db's worker until SIGTERM or SIGINT.

    The queue is named after the hive (see ``provisioner.tasks.enqueue``), so this
    process runs only that hive's downloads, one at a time, on this machine's disk;
    more downloads at once means more workers for the same hive. A stop hands the
    running job back to the queue at once; a second signal exits on the spot.
    """
    from django_tasks_db.management.commands.db_worker import Worker as QueueConsumer

    from provisioner.tasks import run_download

    start_push_loop()
    requeued = recover_hive(hive, sole_worker=False)
    if requeued:
        logger.info("requeued %d unfinished download(s) of hive %s: %s", len(requeued), hive, requeued)
    peer_server = start_peer_server(hive)
    peer_url = peer_server.advertised_url() if peer_server else None
    hive.beat(peer_url=peer_url)
    close_old_connections()
    me = this_process()  # what DownloadJob.process says while this process runs a job
    consumer = QueueConsumer(
        queue_names=[hive.name],
        interval=interval,
        batch=False,
        backend_name=run_download.backend,
        startup_delay=False,
        max_tasks=None,
        worker_id=f"{hive.name}@{me}"[:64],
        excluded_queue_names=[],
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            logger.warning("%s again: exiting now", signal.strsignal(signum))
            os._exit(1)
        stopping = True
        consumer.running = False
        logger.warning("%s: stopping the worker of hive %s", signal.strsignal(signum), hive)
        raise WorkerStopping()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    heartbeat = HiveHeartbeat(hive, peer_url=peer_url)
    heartbeat.start()
    logger.info("worker %s consumes queue %r of hive %s (models in %s)", me, hive.name, hive, hive.models_dir)
    try:
        while consumer.running:
            try:
                consumer.run()
            except (OperationalError, InterfaceError):
                if not consumer.running:
                    break
                logger.exception("lost the database; asking again in %.0f s", DATABASE_RETRY_S)
                connections.close_all()
                time.sleep(DATABASE_RETRY_S)
    except WorkerStopping:
        pass
    finally:
        stopping = True  # from here on a signal means "exit now"
        heartbeat.stop()
        if peer_server is not None:
            peer_server.stop()
        # The interrupted connection may be mid-query: hand back on a fresh one.
        connections.close_all()
        try:
            if handed_back := hand_back_jobs(hive, me):
                logger.info("handed job(s) %s back to the queue of hive %s", handed_back, hive)
        finally:
            connections.close_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    logger.info("worker %s of hive %s stopped", me, hive)
