"""The fleet page: models × hives, and the catalog entry's other hives."""

from __future__ import annotations

from catalog.models import Hive, ModelEntry
from provisioner.models import DownloadJob


def _entry(hive, reference="hf:acme/m", status=ModelEntry.STATUS_READY):
    return ModelEntry.objects.create(
        hive=hive, reference=reference, name="acme/m", vendor="huggingface", path=f"/x/{hive.name}", status=status
    )


def test_it_requires_login(client, db):
    assert client.get("/hives/").status_code == 302


def test_it_rejects_post(alice_client, hive):
    assert alice_client.post("/hives/").status_code == 405


def test_it_shows_each_model_on_each_hive(alice_client, hive):
    gpu1, gpu2, gpu3 = (Hive.objects.create(name=n) for n in ("gpu-1", "gpu-2", "gpu-3"))
    _entry(gpu1)
    DownloadJob.objects.create(
        reference="hf:acme/m", hive=gpu2, state=DownloadJob.RUNNING, bytes_done=25, bytes_total=100, bytes_from_peers=25
    )
    DownloadJob.objects.create(reference="hf:acme/m", hive=gpu3, state=DownloadJob.FAILED)
    DownloadJob.objects.create(reference="hf:acme/m", hive=hive)
    body = alice_client.get("/hives/").content.decode()
    assert ">ready</a>" in body and "downloading 25%" in body and ">failed</a>" in body and ">queued</a>" in body
    assert "25 B taken from peer hives instead of the origin" in body
    # The failed cell can be tried again by its button; a page without JavaScript posts the download form.
    assert '<input type="hidden" name="hives" value="gpu-3">' in body


def test_add_to_hive_posts_the_download_form(alice_client, hive):
    gpu1 = Hive.objects.create(name="gpu-1")
    _entry(hive)
    body = alice_client.get("/hives/").content.decode()
    assert "add to gpu-1" in body and "add to local" not in body
    response = alice_client.post("/jobs/", {"model": "hf:acme/m", "hives": ["gpu-1"]})
    job = DownloadJob.objects.get(hive=gpu1)
    assert response.status_code == 303 and response["Location"] == job.get_absolute_url()


def test_the_nav_links_the_fleet(alice_client, hive):
    assert 'href="/hives/"' in alice_client.get("/models/").content.decode()


def test_the_entry_page_lists_the_hives_that_hold_the_model(alice_client, hive):
    gpu1 = Hive.objects.create(name="gpu-1")
    mine, theirs = _entry(hive), _entry(gpu1)
    body = alice_client.get(mine.get_absolute_url()).content.decode()
    assert f'<a class="tag" href="{theirs.get_absolute_url()}">gpu-1</a>' in body
