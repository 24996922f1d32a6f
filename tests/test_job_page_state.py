"""What a job page claims must be true: no busy bar for a job that is not working, the
progress in the tab title, icons instead of emoji that need an emoji font."""

from __future__ import annotations

import re

import pytest

from provisioner.models import Action, DownloadJob

EMOJI = re.compile(r"[\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff\ufe0f]")


@pytest.fixture
def job(hive, alice):
    return DownloadJob.objects.create(reference="hf:org/name", hive=hive, requested_by=alice)


def progress_bar(body: str) -> str:
    return re.search(r'<progress id="job-progressbar"[^>]*>', body).group(0)


@pytest.mark.parametrize("state", [DownloadJob.QUEUED, DownloadJob.FAILED, DownloadJob.CANCELLED])
def test_a_job_that_is_not_working_shows_no_busy_bar(alice_client, job, state):
    DownloadJob.objects.filter(pk=job.pk).update(state=state, bytes_total=None)
    bar = progress_bar(alice_client.get(f"/jobs/{job.pk}/").content.decode())
    assert 'value="0"' in bar, bar  # a <progress> without a value is the animated busy bar


def test_only_a_running_job_of_unknown_size_shows_the_busy_bar(alice_client, job):
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.RUNNING, bytes_total=None)
    bar = progress_bar(alice_client.get(f"/jobs/{job.pk}/").content.decode())
    assert "value=" not in bar
    DownloadJob.objects.filter(pk=job.pk).update(bytes_total=1000, bytes_done=420)
    bar = progress_bar(alice_client.get(f"/jobs/{job.pk}/").content.decode())
    assert 'max="1000" value="420"' in bar


def test_the_job_list_shows_no_busy_bar_for_a_failed_job(alice_client, job):
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.FAILED, bytes_total=None, error="boom")
    body = alice_client.get("/jobs/").content.decode()
    assert "<progress" not in body


def test_the_tab_title_carries_the_progress_of_a_running_job(alice_client, job):
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.RUNNING, bytes_total=1000, bytes_done=420)
    body = alice_client.get(f"/jobs/{job.pk}/").content.decode()
    assert "<title>42% · org/name — rbee</title>" in body
    assert 'data-title="42% · org/name — rbee"' in body
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.FAILED)
    assert "<title>failed · org/name — rbee</title>" in alice_client.get(f"/jobs/{job.pk}/").content.decode()


def test_live_pages_can_say_their_socket_dropped(alice_client, job):
    for path in [f"/jobs/{job.pk}/", "/jobs/"]:
        body = alice_client.get(path).content.decode()
        assert 'id="live-status" role="status" hidden' in body


def test_relative_times_carry_the_exact_time_for_the_page_to_tick(alice_client, job):
    body = alice_client.get(f"/jobs/{job.pk}/").content.decode()
    assert re.search(r'<time class="rel" datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">', body)


def test_the_page_draws_icons_but_the_stored_narration_keeps_its_emoji(alice_client, job):
    job.narrate(Action("model_download_queued"), "Queued 'org/name' on hive 'local'")
    job.narrate(Action("model_download_start"), "📥 Downloading model 'org/name' on hive 'local'")
    job.narrate(Action("model_download_file_done"), "✓ config.json (2 B, sha256 abc…)")
    job.narrate(Action("model_download_exists"), "⚠️ Model 'org/name' already exists", level="warn")
    job.narrate(Action("model_download_cancelled"), "⏹ Cancelled by alice before it started", level="warn")
    job.narrate(Action("model_download_complete"), "✅ Model 'org/name' downloaded successfully (2 B)")
    job.narrate(Action("model_download_failed"), "❌ Failed to download model 'org/name': boom", level="error")
    job.narrate(Action("model_delete"), "🗑 Model 'org/name' deleted from hive 'local' by alice")

    body = alice_client.get(f"/jobs/{job.pk}/").content.decode()
    events = body[body.index('<ol id="job-events"') : body.index("</ol>", body.index('<ol id="job-events"'))]
    assert not EMOJI.search(events), EMOJI.findall(events)
    assert "Downloading model &#x27;org/name&#x27; on hive &#x27;local&#x27;" in events
    kinds = re.findall(r'<svg class="icon (\w+)"', events)
    assert kinds == ["info", "download", "done", "warn", "stop", "done", "error", "delete"]

    stored = list(job.events.order_by("seq").values_list("human", flat=True))
    assert [h[0] for h in stored] == ["Q", "📥", "✓", "⚠", "⏹", "✅", "❌", "🗑"]


def test_pushed_events_draw_the_same_icons(job):
    from provisioner.narration import render_event_message

    event = job.narrate(Action("model_download_complete"), "✅ Model 'org/name' downloaded successfully (2 B)")
    html = render_event_message(job, event)
    assert '<svg class="icon done"' in html and not EMOJI.search(html)


# -- every page runs under a CSP without 'unsafe-inline' ----------------------------------


def test_no_page_needs_inline_script_style_or_handlers(alice_client, job, hive):
    from catalog.models import ModelEntry

    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/b", name="a/b", vendor="huggingface", path="/x")
    job.narrate(Action("model_download_start"), "📥 Downloading")
    for path in ["/models/", f"/models/{entry.pk}/", f"/models/{entry.pk}/delete/", "/jobs/", "/jobs/new/",
                 f"/jobs/{job.pk}/", f"/jobs/{job.pk}/cancel/"]:
        body = alice_client.get(path).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), path
        assert not re.search(r"<style|\sstyle=", body), path
        assert not re.search(r"\son[a-z]+=", body), path
        assert "hx-on" not in body and "javascript:" not in body, path
    assert '"includeIndicatorStyles": false' in body and '"allowEval": false' in body
