"""Per-hive limits that running jobs follow: downloads at once, a bandwidth cap, a
download window; and pause, resume and "run next" on jobs. Real downloads from the
fake hub; the clock is moved with RBEE_CLOCK_SHIFT_S, not by waiting for hours."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Hive
from catalog.windows import DownloadWindow, InvalidWindow
from provisioner.models import Action, DownloadJob
from tests.helpers import actions, blob, wait_finished, wait_until

MIB = 1024 * 1024


@pytest.fixture
def repos(hub):
    """Three models whose weights the file host sends slowly until told otherwise."""
    names = []
    for n in range(3):
        name = f"acme/limit-{n}"
        hub.add_repo(name, {"config.json": b"{}", "model.safetensors": blob(6 * MIB, seed=60 + n)})
        hub.set_fault(name, "model.safetensors", throttle_bps=MIB)
        names.append(name)
    return names


def _state(job: DownloadJob) -> str:
    job.refresh_from_db()
    return job.state


def _finish_all(hub, jobs) -> None:
    hub.clear_faults()
    for job in jobs:
        wait_finished(job, timeout=60)


@pytest.mark.parametrize(
    ("text", "canonical", "inside", "outside"),
    [
        ("22:00-06:00", "22:00-06:00", ["23:59", "00:00", "05:59"], ["06:00", "12:00", "21:59"]),
        ("9:30 - 17:00", "09:30-17:00", ["09:30", "16:59"], ["17:00", "09:29", "00:00"]),
        ("00:00-23:59", "00:00-23:59", ["00:00", "23:58"], ["23:59"]),
    ],
)
def test_a_window_is_parsed_once_and_may_cross_midnight(text, canonical, inside, outside):
    window = DownloadWindow.parse(text)
    assert window.canonical == canonical
    at = [timezone.datetime.strptime(t, "%H:%M").time() for t in inside + outside]
    assert [window.contains(t) for t in at] == [True] * len(inside) + [False] * len(outside)


@pytest.mark.parametrize("text", ["", "22-06", "24:00-01:00", "10:00-10:00", "10:00", "abc"])
def test_a_bad_window_is_refused_with_the_form(text):
    with pytest.raises(InvalidWindow, match="HH:MM-HH:MM"):
        DownloadWindow.parse(text)


def test_it_runs_no_more_than_the_hive_allows_and_a_raised_limit_starts_the_next(hub, repos, hive, alice_client):
    Hive.objects.filter(pk=hive.pk).update(max_concurrent_downloads=1)
    first, _ = DownloadJob.submit(repos[0], hive, None)
    second, _ = DownloadJob.submit(repos[1], hive, None)
    wait_until(lambda: _state(first) == "running", what="the first job to run")
    time.sleep(1.0)
    assert _state(second) == "queued"
    assert second.queue_position() == 1

    response = alice_client.patch(f"/api/hives/{hive.name}/", {"max_concurrent_downloads": 2}, content_type="application/json")

    assert response.status_code == 200 and response.json()["max_concurrent_downloads"] == 2
    wait_until(lambda: _state(second) == "running", timeout=3, what="the second job to start")
    _finish_all(hub, [first, second])
    assert first.state == second.state == "succeeded"


def test_run_next_moves_a_waiting_job_to_the_front(hub, repos, hive, alice_client):
    Hive.objects.filter(pk=hive.pk).update(max_concurrent_downloads=1)
    first, _ = DownloadJob.submit(repos[0], hive, None)
    wait_until(lambda: _state(first) == "running")
    older, _ = DownloadJob.submit(repos[1], hive, None)
    newer, _ = DownloadJob.submit(repos[2], hive, None)
    assert (older.queue_position(), newer.queue_position()) == (1, 2)

    response = alice_client.post(f"/api/jobs/{newer.pk}/prioritize/")

    assert response.status_code == 200 and response.json()["queue_position"] == 1
    hub.clear_faults(repos[0] + "/model.safetensors")
    hub.clear_faults()
    wait_until(lambda: _state(newer) in ("running", "succeeded"), timeout=30, what="the moved-up job to start")
    assert _state(older) == "queued" or older.started_at > newer.started_at
    assert Action.PRIORITIZED in actions(newer)
    _finish_all(hub, [first, older, newer])


def test_pause_keeps_the_bytes_and_resume_goes_on_from_them(hub, repos, hive, alice_client):
    job, _ = DownloadJob.submit(repos[0], hive, None)
    wait_until(lambda: DownloadJob.objects.get(pk=job.pk).bytes_done > 2 * MIB, timeout=20, what="2 MiB")

    response = alice_client.post(f"/api/jobs/{job.pk}/pause/")

    assert response.status_code == 200
    wait_until(lambda: _state(job) == "paused", timeout=3, what="the pause")
    kept = job.partial_dir / "model.safetensors"
    on_disk = kept.stat().st_size
    assert on_disk >= 2 * MIB
    assert alice_client.post(f"/api/jobs/{job.pk}/pause/").status_code == 409
    hub.clear_faults()

    assert alice_client.post(f"/api/jobs/{job.pk}/resume/").status_code == 200
    job = wait_finished(job, timeout=30)

    assert job.state == "succeeded", job.error
    ranges = [r.range for r in hub.file_host.requests if r.method == "GET" and r.range]
    assert ranges and int(ranges[-1][6:].split("-")[0]) >= on_disk - MIB
    story = actions(job)
    assert story.index(Action.PAUSED) < story.index(Action.COMPLETE)


def test_a_paused_job_cancelled_loses_its_bytes(hub, repos, hive, alice_client):
    job, _ = DownloadJob.submit(repos[0], hive, None)
    wait_until(lambda: DownloadJob.objects.get(pk=job.pk).bytes_done > MIB, timeout=20)
    job.pause()
    wait_until(lambda: _state(job) == "paused", timeout=3)
    assert job.partial_dir.exists()

    assert alice_client.post(f"/api/jobs/{job.pk}/cancel/").status_code == 200

    assert _state(job) == "cancelled" and not job.partial_dir.exists()


def _window_excluding_now() -> str:
    now = timezone.localtime()
    return f"{(now + timedelta(hours=2)):%H:%M}-{(now + timedelta(hours=3)):%H:%M}"


def test_outside_the_window_jobs_wait_and_start_when_it_opens(hub, repos, hive, settings):
    hub.clear_faults()
    Hive.objects.filter(pk=hive.pk).update(download_window=_window_excluding_now())
    job, _ = DownloadJob.submit(repos[0], hive, None)
    time.sleep(1.0)
    assert _state(job) == "queued"
    assert Action.WAITING in actions(job)
    assert "Waiting for the download window" in job.events.get(action=Action.WAITING).human

    settings.RBEE_CLOCK_SHIFT_S = 2.5 * 3600  # inside the window now
    DownloadJob.dispatch(hive)  # what the hive's heartbeat does every few seconds

    assert wait_finished(job, timeout=30).state == "succeeded"


def test_a_running_job_waits_at_the_end_of_its_window_keeping_its_bytes(hub, repos, hive, settings):
    now = timezone.localtime()
    Hive.objects.filter(pk=hive.pk).update(download_window=f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}")
    job, _ = DownloadJob.submit(repos[0], hive, None)
    wait_until(lambda: DownloadJob.objects.get(pk=job.pk).bytes_done > MIB, timeout=20)

    settings.RBEE_CLOCK_SHIFT_S = 2 * 3600  # past the window's end

    wait_until(lambda: _state(job) == "queued", timeout=3, what="the job to stop at the window's end")
    assert (job.partial_dir / "model.safetensors").stat().st_size > MIB
    assert job.events.filter(action=Action.WAITING).exists()
    DownloadJob.dispatch(hive)
    time.sleep(0.5)
    assert _state(job) == "queued"  # still closed: nothing starts

    settings.RBEE_CLOCK_SHIFT_S = 0
    hub.clear_faults()
    DownloadJob.dispatch(hive)
    assert wait_finished(job, timeout=30).state == "succeeded"


@pytest.mark.slow
def test_the_bandwidth_cap_holds_and_a_new_cap_reaches_a_running_job(hub, hive, alice_client):
    hub.add_repo("acme/capped", {"config.json": b"{}", "model.safetensors": blob(48 * MIB, seed=77)})
    cap = 2 * MIB
    Hive.objects.filter(pk=hive.pk).update(max_bytes_per_s=cap)
    job, _ = DownloadJob.submit("acme/capped", hive, None)
    wait_until(lambda: DownloadJob.objects.get(pk=job.pk).bytes_done > MIB, timeout=20)

    start_bytes, start = DownloadJob.objects.get(pk=job.pk).bytes_done, time.monotonic()
    time.sleep(5.0)
    rate = (DownloadJob.objects.get(pk=job.pk).bytes_done - start_bytes) / (time.monotonic() - start)
    assert 0.85 * cap <= rate <= 1.1 * cap, f"{rate / MIB:.2f} MiB/s under a {cap / MIB:.0f} MiB/s cap"

    alice_client.patch(f"/api/hives/{hive.name}/", {"max_bytes_per_s": 4 * cap}, content_type="application/json")
    time.sleep(2.0)  # a new cap takes effect within two seconds
    start_bytes, start = DownloadJob.objects.get(pk=job.pk).bytes_done, time.monotonic()
    time.sleep(1.5)
    faster = (DownloadJob.objects.get(pk=job.pk).bytes_done - start_bytes) / (time.monotonic() - start)
    assert faster > 2.5 * cap, f"{faster / MIB:.2f} MiB/s after raising the cap"
    assert wait_finished(job, timeout=30).state == "succeeded"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_bytes_per_s": -1}, "max_bytes_per_s"),
        ({"max_bytes_per_s": "fast"}, "max_bytes_per_s"),
        ({"max_concurrent_downloads": 0}, "max_concurrent_downloads"),
        ({"max_concurrent_downloads": 1000}, "max_concurrent_downloads"),
        ({"max_concurrent_downloads": None}, "max_concurrent_downloads"),
        ({"download_window": "25:00-01:00"}, "download_window"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(alice_client, hive, body, field):
    before = Hive.objects.values("max_bytes_per_s", "max_concurrent_downloads", "download_window").get(pk=hive.pk)
    response = alice_client.patch(f"/api/hives/{hive.name}/", body, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()["error"] or field in response.json().get("fields", {})
    assert Hive.objects.values("max_bytes_per_s", "max_concurrent_downloads", "download_window").get(pk=hive.pk) == before


def test_limits_can_be_cleared_and_unknown_hives_are_404(alice_client, hive):
    Hive.objects.filter(pk=hive.pk).update(max_bytes_per_s=5, download_window="01:00-02:00")
    response = alice_client.patch(
        f"/api/hives/{hive.name}/", {"max_bytes_per_s": None, "download_window": ""}, content_type="application/json"
    )
    assert response.status_code == 200
    assert (response.json()["max_bytes_per_s"], response.json()["download_window"]) == (None, "")
    assert response.json()["window_open"] is True
    assert alice_client.patch("/api/hives/mars/", {}, content_type="application/json").status_code == 404


@pytest.mark.parametrize(("state", "action"), [("running", "resume"), ("succeeded", "pause"), ("running", "prioritize")])
def test_job_actions_the_state_forbids_answer_409(alice_client, hive, state, action):
    job = DownloadJob.objects.create(reference=f"hf:acme/{action}", hive=hive, state=state)
    response = alice_client.post(f"/api/jobs/{job.pk}/{action}/")
    assert response.status_code == 409 and state in response.json()["error"]


def test_the_hive_page_shows_and_saves_limits(alice_client, hive):
    page = alice_client.get(f"/hives/{hive.name}/").content.decode()
    assert 'name="max_bytes_per_s"' in page and 'name="download_window"' in page

    response = alice_client.post(
        f"/hives/{hive.name}/",
        {
            "max_bytes_per_s": "1000000",
            "max_concurrent_downloads": "3",
            "download_window": "22:00 - 6:00",
            "high_watermark_percent": "95",
            "low_watermark_percent": "85",
        },
    )

    assert response.status_code == 303
    hive.refresh_from_db()
    assert (hive.max_bytes_per_s, hive.max_concurrent_downloads, hive.download_window) == (1000000, 3, "22:00-06:00")
    assert (hive.high_watermark_percent, hive.low_watermark_percent) == (95, 85)
    bad = alice_client.post(f"/hives/{hive.name}/", {"max_concurrent_downloads": "0", "download_window": "nope"})
    assert bad.status_code == 400 and "HH:MM-HH:MM" in bad.content.decode()
    assert "Hives" in alice_client.get("/hives/").content.decode()


def test_the_hive_pages_require_login(client, hive):
    assert client.get(f"/hives/{hive.name}/").status_code == 302
    assert client.post("/jobs/1/pause/").status_code == 302
