"""The Hub's model search (``HfApi.list_models``), for the download page.

The configured endpoints are asked in order, the next only when one is down, as
for plans. Mirrors often serve files but not the search API: an endpoint that
answers the search with 404 is said to have none, plainly, rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Literal

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session

PAGE_SIZE = 20
PROBE_TIMEOUT_S = 5.0
#: What the admin picks → what list_models sorts by (always highest first).
SORTS: dict[str, Literal["downloads", "likes", "last_modified"]] = {
    "downloads": "downloads",
    "likes": "likes",
    "recent": "last_modified",
}
_EXPAND: list[Any] = ["downloads", "likes", "lastModified", "tags", "gated", "pipeline_tag", "private"]


@dataclass(frozen=True)
class HubModel:
    """One search result, as a compact card shows it."""

    repo_id: str
    downloads: int | None
    likes: int | None
    updated: datetime | None
    tags: list[str]
    gated: bool
    pipeline_tag: str | None


@dataclass
class SearchResults:
    query: str
    gguf: bool
    sort: str
    page: int
    endpoint: str = ""
    models: list[HubModel] = field(default_factory=list)
    has_next: bool = False
    #: Said instead of results: no search on this endpoint, or none reachable.
    error: str = ""


def clean_sort(value: str) -> str:
    return value if value in SORTS else "downloads"


def clean_page(value: str) -> int:
    try:
        return max(1, min(int(value), 500))
    except ValueError:
        return 1


def search_models(endpoints: list[str], token: str | None, query: str, *, gguf: bool, sort: str, page: int) -> SearchResults:
    results = SearchResults(query=query, gguf=gguf, sort=clean_sort(sort), page=page)
    failures = []
    for endpoint in endpoints:
        # list_models retries a dead endpoint for half a minute (huggingface_hub's
        # backoff); one quick request first tells a down endpoint from a slow search.
        try:
            status = get_session().get(f"{endpoint}/api/models", params={"limit": 1}, timeout=PROBE_TIMEOUT_S).status_code
        except Exception as exc:
            if not isinstance(exc, OSError) and not type(exc).__module__.startswith(("httpx", "httpcore")):
                raise
            failures.append(f"could not reach {endpoint}: {type(exc).__name__}")
            continue
        if status >= 500:
            failures.append(f"{endpoint} answered {status}")
            continue
        api = HfApi(endpoint=endpoint, token=token or False)
        wanted = page * PAGE_SIZE + 1  # one more than shown says whether there is a next page
        try:
            found = list(
                islice(
                    api.list_models(
                        search=query or None,
                        filter="gguf" if gguf else None,
                        sort=SORTS[results.sort],
                        limit=wanted,
                        expand=_EXPAND,
                    ),
                    wanted,
                )
            )
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and status >= 500:
                failures.append(f"{endpoint} answered {status}")
                continue
            results.endpoint = endpoint
            if status in (404, 405, 501):
                results.error = (
                    f"{endpoint} does not offer the Hub's model search (it answered {status}). "
                    "Type a model reference instead, or search on the Hub itself."
                )
            else:
                results.error = f"{endpoint} refused the search ({status})."
            return results
        except Exception as exc:  # the HTTP client's connection errors (OSError, httpx's own)
            if not isinstance(exc, OSError) and not type(exc).__module__.startswith(("httpx", "httpcore")):
                raise
            failures.append(f"could not reach {endpoint}: {type(exc).__name__}")
            continue
        results.endpoint = endpoint
        shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        results.has_next = len(found) > page * PAGE_SIZE
        results.models = [
            HubModel(
                repo_id=m.id,
                downloads=m.downloads,
                likes=m.likes,
                updated=m.last_modified or m.created_at,
                tags=[t for t in m.tags or [] if ":" not in t][:8],
                gated=bool(m.gated),
                pipeline_tag=m.pipeline_tag,
            )
            for m in shown
        ]
        return results
    results.error = "The Hub search is unavailable: " + "; ".join(failures) + "."
    return results
