"""Cancel asks first: on the job page with htmx, on a page of its own without JavaScript."""

from __future__ import annotations

from provisioner.models import DownloadJob


def test_it_requires_login(client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    response = client.get(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_job_page_offers_cancel_as_a_link_to_the_confirmation(alice_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    body = alice_client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/jobs/{job.pk}/cancel/"' in body and f'hx-get="/jobs/{job.pk}/cancel/"' in body
    assert 'id="job-confirm"' in body


def test_a_get_asks_for_confirmation_and_changes_nothing(alice_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    response = alice_client.get(f"/jobs/{job.pk}/cancel/")
    body = response.content.decode()
    assert response.status_code == 200 and "<html" in body
    assert "Cancel the download of a/b?" in body
    assert f'<form method="post" action="/jobs/{job.pk}/cancel/">' in body  # a plain post, no hx-post
    assert "csrfmiddlewaretoken" in body
    job.refresh_from_db()
    assert job.state == DownloadJob.QUEUED and not job.cancel_requested and not job.events.exists()


def test_htmx_gets_the_confirmation_as_a_fragment_that_answers_in_place(alice_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    response = alice_client.get(f"/jobs/{job.pk}/cancel/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'id="cancel-confirm"' in body and 'hx-target="#job-header"' in body and "data-dismiss" in body


def test_the_confirmed_post_cancels_and_comes_back_to_the_job(alice_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    response = alice_client.post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 303 and response["Location"] == f"/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.state == DownloadJob.CANCELLED


def test_a_finished_job_has_nothing_to_confirm(alice_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive, state=DownloadJob.SUCCEEDED)
    response = alice_client.get(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
