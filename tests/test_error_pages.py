"""The 404 and 500 pages: styled, from static files only, telling nothing about the request."""

from __future__ import annotations

from django.template import loader


def test_the_404_page_is_styled_and_echoes_nothing(alice_client, hive):
    response = alice_client.get("/models/999/?token=hunter2")
    body = response.content.decode()
    assert response.status_code == 404
    assert "Not found" in body and 'href="/static/rbee/rbee.css"' in body
    assert "hunter2" not in body and "/models/999/" not in body and "alice" not in body


def test_the_500_page_renders_without_a_request_or_context():
    body = loader.get_template("500.html").render()
    assert "Something went wrong" in body and 'href="/static/rbee/rbee.css"' in body
    assert 'href="/models/"' in body


def test_the_error_pages_load_no_script_and_nothing_from_elsewhere():
    for name in ("404.html", "500.html"):
        body = loader.get_template(name).render()
        assert "<script" not in body and "http://" not in body and "https://" not in body, name
