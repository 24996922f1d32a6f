"""A hive's disk after the download: eviction by watermarks, pins, dedupe, verify,
repair and updates, on real files and a real (small) filesystem, against the fake Hub."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, sha256, wait_finished

KIB = 1024


def _entry(hive: Hive, name: str, size: int, *, seed: int, idle_h: float = 5, **fields) -> ModelEntry:
    """An entry with one real file, last used ``idle_h`` hours ago."""
    folder = hive.path / "huggingface" / name
    folder.mkdir(parents=True)
    data = blob(size, seed=seed)
    (folder / "model.safetensors").write_bytes(data)
    entry = ModelEntry.objects.create(
        hive=hive, reference=f"hf:{name}", name=name, vendor="huggingface", path=str(folder),
        models_root=str(hive.path), size_bytes=size, file_count=1, **fields,
    )  # fmt: skip
    ModelFile.objects.create(entry=entry, path="model.safetensors", size_bytes=size, sha256=sha256(data))
    ModelEntry.objects.filter(pk=entry.pk).update(
        created_at=timezone.now() - timedelta(days=1), last_used_at=timezone.now() - timedelta(hours=idle_h)
    )
    entry.refresh_from_db()
    return entry


def _api_job(client, url: str) -> DownloadJob:
    response = client.post(url)
    assert response.status_code == 202, response.content
    return wait_finished(DownloadJob.objects.get(pk=response.json()["id"]))


# -- watermarks and eviction ------------------------------------------------------------


def test_it_evicts_the_least_recently_used_idle_unpinned_entry_first(hub, small_disk, hive):
    pinned = _entry(hive, "acme/pinned", 800 * KIB, seed=1, idle_h=9, pinned=True)
    recent = _entry(hive, "acme/recent", 800 * KIB, seed=2, idle_h=0.1)
    oldest = _entry(hive, "acme/oldest", 800 * KIB, seed=3, idle_h=5)
    older = _entry(hive, "acme/older", 800 * KIB, seed=4, idle_h=3)
    hub.add_repo("acme/new", {"model.safetensors": blob(600 * KIB, seed=5)})
    # 3.2 MiB used of 4: another 0.6 MiB passes the 90% mark, so 0.6 MiB goes, down to 80%.
    preview = hive.eviction_plan(600 * KIB)
    assert [e.name for e in preview.victims] == ["acme/oldest"] and preview.fits
    assert {(e.name, why) for e, why in preview.blocking} == {("acme/pinned", "pinned"), ("acme/recent", "used recently")}

    job = download("acme/new", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert set(ModelEntry.objects.values_list("name", flat=True)) == {"acme/pinned", "acme/recent", "acme/older", "acme/new"}
    assert not Path(oldest.path).exists()
    assert all(Path(e.path, "model.safetensors").exists() for e in (pinned, recent, older))
    evicted = job.events.get(action="model_evicted")
    assert evicted.fields["entry_id"] == oldest.pk and "acme/oldest" in evicted.human
    assert actions(job).index("model_evicted") < actions(job).index("model_download_progress")


def test_it_refuses_before_a_byte_when_pins_and_recent_use_leave_too_little(hub, small_disk, hive, settings):
    settings.RBEE_EVICT_MIN_IDLE_S = 4 * 3600
    _entry(hive, "acme/pinned", 1200 * KIB, seed=1, idle_h=9, pinned=True)
    _entry(hive, "acme/recent", 1200 * KIB, seed=2, idle_h=1)  # idle, but not for four hours
    hub.add_repo("acme/big", {"model.safetensors": blob(1400 * KIB, seed=3)})
    job = download("acme/big", hive)
    assert job.state == DownloadJob.FAILED and job.error_kind == "disk_full"
    assert "acme/pinned (pinned)" in job.error and "acme/recent (used recently)" in job.error
    assert "high watermark" in job.error
    assert ModelEntry.objects.count() == 2 and "model_evicted" not in actions(job)
    hub.wait_idle()
    assert hub.gets("acme/big", "model.safetensors") == []
    assert not job.partial_dir.exists()


def test_the_plan_preview_says_what_would_be_evicted(hub, small_disk, hive, alice_client):
    _entry(hive, "acme/oldest", 800 * KIB, seed=3, idle_h=5)
    for n in range(3):
        _entry(hive, f"acme/keep{n}", 800 * KIB, seed=10 + n, idle_h=0.1)
    hub.add_repo("acme/new", {"model.safetensors": blob(600 * KIB, seed=5)})
    page = alice_client.post("/jobs/plan/", {"model": "acme/new"}).content.decode()
    assert "Would evict" in page and "acme/oldest" in page
    assert ModelEntry.objects.filter(name="acme/oldest").exists()


def test_a_used_entry_is_not_idle(client, hive, alice_client):
    entry = _entry(hive, "acme/x", 10, seed=1, idle_h=5)
    response = alice_client.post(f"/api/models/{entry.pk}/used/")
    assert response.status_code == 200
    entry.refresh_from_db()
    assert timezone.now() - entry.last_used_at < timedelta(seconds=5)
    assert response.json()["last_used_at"] is not None


# -- one copy of identical bytes ----------------------------------------------------------


def test_identical_files_are_stored_once_and_delete_keeps_the_shared_bytes(hub, hive, alice_client):
    weights = blob(256 * KIB, seed=7)
    hub.add_repo("acme/one", {"model.safetensors": weights, "config.json": b'{"a": 1}'})
    hub.add_repo("acme/two", {"model.safetensors": weights, "config.json": b'{"a": 2}'})
    one = download("acme/one", hive)
    fetched_before = len(hub.gets("acme/two", "model.safetensors"))
    two = download("acme/two", hive)
    assert two.state == DownloadJob.SUCCEEDED, two.error
    hub.wait_idle()
    assert len(hub.gets("acme/two", "model.safetensors")) == fetched_before  # not one GET more
    linked = two.events.get(action="model_download_linked")
    assert linked.fields["bytes_saved"] == len(weights) and linked.fields["entry_id"] == one.entry_id
    a = Path(one.entry.path, "model.safetensors").stat()
    b = Path(two.entry.path, "model.safetensors").stat()
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    hive_json = alice_client.get("/api/hives/local/").json()
    assert hive_json["dedupe_saved_bytes"] == len(weights)
    assert hive_json["catalog_bytes"] == len(weights) + len(b'{"a": 1}') + len(b'{"a": 2}')

    assert alice_client.delete(f"/api/models/{one.entry_id}/").status_code == 204
    assert Path(two.entry.path, "model.safetensors").read_bytes() == weights
    assert alice_client.get("/api/hives/local/").json()["dedupe_saved_bytes"] == 0
    verify = _api_job(alice_client, f"/api/models/{two.entry_id}/verify/")
    assert verify.state == DownloadJob.SUCCEEDED
    assert ModelEntry.objects.get(pk=two.entry_id).integrity == "ok"


def test_dedupe_works_across_vendors(hub, hive):
    """A file fetched from a plain URL with its sha256 is the Hub file already on disk."""
    weights = blob(128 * KIB, seed=8)
    hub.add_repo("acme/gguf", {"model.gguf": weights})
    first = download("acme/gguf", hive)
    url = hub.lfs_url("acme/gguf", "model.gguf") + f"#sha256={sha256(weights)}"
    gets_before = len(hub.file_host.requests)
    second = download(url, hive)
    assert second.state == DownloadJob.SUCCEEDED, second.error
    assert second.vendor == "url" and "model_download_linked" in actions(second)
    hub.wait_idle()
    assert not [r for r in hub.file_host.requests[gets_before:] if r.method == "GET"]
    [a] = [p for p in Path(first.entry.path).rglob("*") if p.is_file()]
    [b] = [p for p in Path(second.entry.path).rglob("*") if p.is_file()]
    assert a.stat().st_ino == b.stat().st_ino


def test_an_ollama_blob_that_is_a_hub_file_is_one_file(hub, hive, settings):
    from tests.servers.registry import OciRegistry, find_binary

    if find_binary() is None:
        pytest.skip("needs Debian's docker-registry")
    weights = blob(200 * KIB, seed=9)
    hub.add_repo("acme/tiny-GGUF", {"tiny.Q4_K_M.gguf": weights})
    hub_entry = download("acme/tiny-GGUF", hive).entry
    with OciRegistry() as registry:
        settings.RBEE_OLLAMA_REGISTRY = registry.url
        registry.push_ollama_model(
            "library", "tiny", "q4", [("application/vnd.ollama.image.model", weights),
                                      ("application/vnd.ollama.image.template", b"{{ .Prompt }}")],
        )  # fmt: skip
        job = download("ollama:tiny:q4", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    linked = job.events.get(action="model_download_linked")
    assert linked.fields["entry_id"] == hub_entry.pk and linked.fields["bytes_saved"] == len(weights)
    hub_file = Path(hub_entry.path, "tiny.Q4_K_M.gguf").stat()
    ollama_files = [p.stat() for p in Path(job.entry.path).rglob("*") if p.is_file() and p.stat().st_size == len(weights)]
    assert [(f.st_dev, f.st_ino) for f in ollama_files] == [(hub_file.st_dev, hub_file.st_ino)]
    assert hive.usage().dedupe_saved == len(weights)


# -- verify and repair ------------------------------------------------------------------


def test_a_flipped_byte_is_found_and_only_that_file_is_fetched_again(hub, hive, alice_client):
    hub.add_repo("acme/rep", {"a.safetensors": blob(64 * KIB, seed=1), "b.safetensors": blob(64 * KIB, seed=2)})
    job = download("acme/rep", hive)
    entry = job.entry
    assert entry.integrity == "ok" and entry.verified_at is not None
    with open(Path(entry.path, "b.safetensors"), "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))

    verify = _api_job(alice_client, f"/api/models/{entry.pk}/verify/")
    assert verify.kind == "verify" and verify.state == DownloadJob.SUCCEEDED
    assert "model_verify_start" in actions(verify) and "model_download_progress" in actions(verify)
    entry.refresh_from_db()
    assert (entry.integrity, entry.damaged_files) == ("damaged", ["b.safetensors"])
    listed = alice_client.get("/api/models/?integrity=damaged").json()["models"]
    assert [m["id"] for m in listed] == [entry.pk]
    assert "damaged" in alice_client.get(f"/models/{entry.pk}/").content.decode()

    hub.wait_idle()
    a_gets, b_gets = len(hub.gets("acme/rep", "a.safetensors")), len(hub.gets("acme/rep", "b.safetensors"))
    repair = _api_job(alice_client, f"/api/models/{entry.pk}/repair/")
    assert repair.state == DownloadJob.SUCCEEDED, repair.error
    hub.wait_idle()
    assert len(hub.gets("acme/rep", "a.safetensors")) == a_gets
    assert len(hub.gets("acme/rep", "b.safetensors")) == b_gets + 2  # the Hub's resolve, the CDN's bytes
    entry.refresh_from_db()
    assert entry.integrity == "ok" and entry.damaged_files == []
    assert Path(entry.path, "b.safetensors").read_bytes() == blob(64 * KIB, seed=2)
    again = _api_job(alice_client, f"/api/models/{entry.pk}/verify/")
    assert again.state == DownloadJob.SUCCEEDED
    entry.refresh_from_db()
    assert entry.integrity == "ok"


def test_a_missing_file_makes_the_entry_missing(hub, hive, alice_client):
    hub.add_repo("acme/gone", {"a.safetensors": blob(4 * KIB, seed=1), "b.safetensors": blob(4 * KIB, seed=2)})
    entry = download("acme/gone", hive).entry
    Path(entry.path, "a.safetensors").unlink()
    _api_job(alice_client, f"/api/models/{entry.pk}/verify/")
    entry.refresh_from_db()
    assert (entry.integrity, entry.damaged_files) == ("missing", ["a.safetensors"])


# -- updates ----------------------------------------------------------------------------


def test_an_update_fetches_only_what_changed_and_switches_at_once(hub, hive, alice_client):
    old_w2, new_w2 = blob(256 * KIB, seed=2), blob(256 * KIB, seed=3)
    hub.add_repo("acme/moving", {"config.json": b'{"v": 1}', "w1.safetensors": blob(256 * KIB, seed=1),
                                 "w2.safetensors": old_w2})  # fmt: skip
    entry = download("acme/moving", hive).entry
    old_path, old_revision = Path(entry.path), entry.revision
    assert alice_client.post(f"/api/models/{entry.pk}/check-update/").json()["update_available"] is False

    new_revision = hub.add_commit("acme/moving", {"w2.safetensors": new_w2})
    checked = alice_client.post(f"/api/models/{entry.pk}/check-update/").json()
    assert checked["update_available"] is True and checked["update_revision"] == new_revision
    assert checked["update_changes"]["changed"] == ["w2.safetensors"]
    assert checked["update_changes"]["added"] == checked["update_changes"]["removed"] == []
    assert checked["update_changes"]["bytes_to_fetch"] == len(new_w2)
    assert [m["id"] for m in alice_client.get("/api/models/?update_available=true").json()["models"]] == [entry.pk]
    assert "Update available" in alice_client.get(f"/models/{entry.pk}/").content.decode()

    hub.wait_idle()
    gets = {p: len(hub.gets("acme/moving", p)) for p in ("config.json", "w1.safetensors", "w2.safetensors")}
    hub.set_fault("acme/moving", "w2.safetensors", throttle_bps=256 * KIB)  # about a second
    response = alice_client.post(f"/api/models/{entry.pk}/update/")
    assert response.status_code == 202
    job = DownloadJob.objects.get(pk=response.json()["id"])
    # While the new revision arrives, the old folder is whole and untouched; it goes only
    # once the entry has switched to the new one.
    whole_reads = 0
    while not DownloadJob.objects.get(pk=job.pk).is_finished:
        try:
            assert {p.name for p in old_path.iterdir()} == {"config.json", "w1.safetensors", "w2.safetensors"}
            assert (old_path / "w2.safetensors").read_bytes() == old_w2
            whole_reads += 1
        except (OSError, AssertionError):
            assert ModelEntry.objects.get(pk=entry.pk).revision == new_revision
        time.sleep(0.05)
    assert whole_reads > 5
    job = wait_finished(job)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    hub.wait_idle()
    assert len(hub.gets("acme/moving", "w2.safetensors")) == gets["w2.safetensors"] + 2  # resolve, then CDN
    assert len(hub.gets("acme/moving", "w1.safetensors")) == gets["w1.safetensors"]
    assert len(hub.gets("acme/moving", "config.json")) == gets["config.json"]

    entry.refresh_from_db()
    assert entry.pk == ModelEntry.objects.get().pk
    assert (entry.revision, entry.previous_revision, entry.update_revision) == (new_revision, old_revision, "")
    assert Path(entry.path, "w2.safetensors").read_bytes() == new_w2
    assert {f.path: f.sha256 for f in entry.files.all()}["w2.safetensors"] == sha256(new_w2)
    assert not old_path.exists() and Path(entry.path) != old_path
    assert actions(job)[-1] == "model_update_switched"


def test_a_reference_pinned_to_a_commit_has_no_updates(hub, hive, alice_client):
    sha = hub.add_repo("acme/fixed", {"config.json": b"{}"})
    entry = download(f"acme/fixed@{sha}", hive).entry
    for call in ("check-update", "update"):
        response = alice_client.post(f"/api/models/{entry.pk}/{call}/")
        assert response.status_code == 409 and "fixed revision" in response.json()["error"]


def test_the_periodic_checks_find_updates_and_queue_verifies(hub, hive, settings):
    from provisioner.disks import run_periodic_checks

    hub.add_repo("acme/tick", {"config.json": b'{"v": 1}'})
    entry = download("acme/tick", hive).entry
    settings.RBEE_VERIFY_EVERY_S = 0
    ModelEntry.objects.filter(pk=entry.pk).update(update_checked_at=timezone.now())
    assert run_periodic_checks(hive)["checked"] == []  # checked just now
    ModelEntry.objects.filter(pk=entry.pk).update(update_checked_at=timezone.now() - timedelta(days=1))
    new_revision = hub.add_commit("acme/tick", {"config.json": b'{"v": 2}'})
    assert run_periodic_checks(hive) == {"checked": [entry.pk], "verify_jobs": []}
    entry.refresh_from_db()
    assert entry.update_revision == new_revision and entry.update_changes["changed"] == ["config.json"]

    settings.RBEE_VERIFY_EVERY_S = 60
    ModelEntry.objects.filter(pk=entry.pk).update(verified_at=timezone.now() - timedelta(hours=1))
    [job_id] = run_periodic_checks(hive)["verify_jobs"]
    job = wait_finished(DownloadJob.objects.get(pk=job_id))
    assert job.kind == "verify" and job.state == DownloadJob.SUCCEEDED


# -- the API's refusals ---------------------------------------------------------------------


def test_patch_pins_and_edits_and_refuses_bad_input(hive, alice_client):
    entry = _entry(hive, "acme/p", 10, seed=1)
    ok = alice_client.patch(f"/api/models/{entry.pk}/", {"pinned": True, "notes": "n", "tags": ["chat", " q4 "]},
                            content_type="application/json")  # fmt: skip
    assert ok.status_code == 200 and ok.json()["pinned"] is True and ok.json()["tags"] == ["chat", "q4"]
    for body, field in [
        ({"pinned": "yes", "notes": "changed"}, "pinned"),
        ({"tags": ["a,b"], "notes": "changed"}, "tags"),
        ({"notes": "changed", "name": "other"}, "name"),
    ]:
        response = alice_client.patch(f"/api/models/{entry.pk}/", body, content_type="application/json")
        assert response.status_code == 400, body
        assert field in response.json()["fields"], response.json()
    entry.refresh_from_db()
    assert (entry.pinned, entry.notes, entry.tags) == (True, "n", "chat, q4")


def test_delete_refuses_a_pinned_entry_without_force(hive, alice_client):
    entry = _entry(hive, "acme/pinned", 10, seed=1, pinned=True)
    refused = alice_client.delete(f"/api/models/{entry.pk}/")
    assert refused.status_code == 409 and "pinned" in refused.json()["error"]
    assert Path(entry.path).exists() and ModelEntry.objects.filter(pk=entry.pk).exists()
    assert alice_client.delete(f"/api/models/{entry.pk}/?force=1").status_code == 204
    assert not ModelEntry.objects.exists()


def test_hive_watermarks_patch(hive, alice_client):
    url = f"/api/hives/{hive.name}/"
    ok = alice_client.patch(url, {"high_watermark_percent": 95, "low_watermark_percent": 70}, content_type="application/json")
    assert ok.status_code == 200 and (ok.json()["high_watermark_percent"], ok.json()["low_watermark_percent"]) == (95, 70)
    for body in ({"low_watermark_percent": 95}, {"high_watermark_percent": 101}, {"high_watermark_percent": "90"}):
        response = alice_client.patch(url, body, content_type="application/json")
        assert response.status_code == 400 and response.json()["fields"], body
    hive.refresh_from_db()
    assert (hive.high_watermark_percent, hive.low_watermark_percent) == (95, 70)


def test_a_second_kind_of_job_waits_for_the_first(hive, alice_client, settings):
    settings.RBEE_SCALED = True  # no worker here: the job stays queued
    other = Hive.objects.create(name="gpu-2", models_dir=str(hive.path))
    entry = _entry(other, "acme/busy", 10, seed=1)
    assert alice_client.post(f"/api/models/{entry.pk}/verify/").status_code == 202
    assert alice_client.post(f"/api/models/{entry.pk}/verify/").status_code == 200
    busy = alice_client.post(f"/api/models/{entry.pk}/repair/")
    assert busy.status_code == 409 and "verify" in busy.json()["error"]


@pytest.mark.parametrize("path", ["/hives/", "/hives/local/"])
def test_the_hive_pages_require_login(client, hive, path):
    response = client.get(path)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("action", ["pin", "verify", "repair", "update", "check-update"])
def test_the_entry_actions_require_login_and_reject_get(client, alice_client, hive, action):
    entry = _entry(hive, "acme/x", 10, seed=1)
    response = client.post(f"/models/{entry.pk}/{action}/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert alice_client.get(f"/models/{entry.pk}/{action}/").status_code == 405


def test_the_entry_page_pins_and_queues_a_verify(hive, alice_client):
    entry = _entry(hive, "acme/x", 10, seed=1)
    assert alice_client.post(f"/models/{entry.pk}/pin/", {"pinned": "1"}).status_code == 303
    entry.refresh_from_db()
    assert entry.pinned and "Unpin" in alice_client.get(f"/models/{entry.pk}/").content.decode()
    response = alice_client.post(f"/models/{entry.pk}/verify/")
    job = DownloadJob.objects.get(kind="verify")
    assert response.status_code == 303 and response["Location"] == job.get_absolute_url()
    job = wait_finished(job)
    assert job.state == DownloadJob.SUCCEEDED
    assert "verify" in alice_client.get(job.get_absolute_url()).content.decode()


def test_hive_usage_on_the_hive_page(hive, alice_client):
    entry = _entry(hive, "acme/big-one", 64 * KIB, seed=1)
    page = alice_client.get(f"/hives/{hive.name}/").content.decode()
    assert "acme/big-one" in page and "90%" in page and "80%" in page
    assert hive.name in alice_client.get("/hives/").content.decode()
    assert os.path.exists(entry.path)


def test_an_update_cut_before_its_switch_leaves_the_entry_on_its_old_folder(hub, hive):
    import json

    from provisioner.install import INSTALL_MARKER, repair_installs

    hub.add_repo("acme/cut", {"config.json": b'{"v": 1}'})
    entry = download("acme/cut", hive).entry
    hub.add_commit("acme/cut", {"config.json": b'{"v": 2}'})
    job = DownloadJob.objects.create(
        reference=entry.reference, hive=hive, kind="update", entry=entry, state=DownloadJob.RUNNING
    )
    # The crash came after the new folder was moved into place, before the entry switched.
    new_folder = Path(entry.path).with_name(Path(entry.path).name + ".2")
    new_folder.mkdir()
    (new_folder / "config.json").write_bytes(b'{"v": 2}')
    (new_folder / INSTALL_MARKER).write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    job.plan = {"vendor": "huggingface", "reference": entry.reference, "revision": "x" * 40,
                "files": [{"path": "config.json", "size": 8}]}  # fmt: skip
    job.save(update_fields=["plan"])

    repair_installs(hive)
    assert not new_folder.exists()
    assert list(ModelEntry.objects.values_list("pk", "path")) == [(entry.pk, entry.path)]
    assert Path(entry.path, "config.json").read_bytes() == b'{"v": 1}'
