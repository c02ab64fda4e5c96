"""The error types users see. Every message names the file or URL and what is wrong."""

from __future__ import annotations


class AllenError(Exception):
    """Base class of napari-allen errors."""


class AllenFormatError(AllenError, ValueError):
    """A file is not a valid Allen grid/zip/NRRD/JSON (message names the file and the problem)."""

    def __init__(self, path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class AllenApiError(AllenError):
    """The Allen API failed (after retries) or refused the query.

    Carries the URL, the HTTP status (if any) and the server's message.
    """

    def __init__(self, url: str, message: str, status: int | None = None,
                 retryable: bool = False) -> None:
        self.url = url
        self.status = status
        self.server_message = message
        self.retryable = retryable
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"Allen API {where}error for {url}: {message}")


class AllenUnreachableError(AllenApiError):
    """The API server cannot be reached at all (connection refused, unknown host): raised at
    once, without retries. The message is one sentence saying what to do."""

    def __init__(self, url: str, address: str, reason: str, cache_note: str) -> None:
        self.address = address
        self.reason = reason
        sentence = (f"Cannot reach the Allen API at {address} ({reason}): check the network, "
                    "set NAPARI_ALLEN_API_URL to the right address, or start a local server "
                    f"with `napari-allen local-api`; {cache_note}.")
        super().__init__(url, sentence, None, retryable=False)
        self.args = (sentence,)

    def __str__(self) -> str:
        return self.args[0]


class AllenCacheError(AllenError):
    """The metadata cache cannot be used (e.g. its folder is read-only or full)."""
