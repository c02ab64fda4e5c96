"""Client of the Allen Brain Atlas API: queries, paging, retries, cache, downloads (no Qt).

- :mod:`.rma`: query building from values; :mod:`.http`: sessions, retries, validation;
- :mod:`.cache`: metadata database and verified file store; :mod:`.client`: ``AllenClient``;
- :mod:`.batch`: concurrent, resumable batch downloads (``download_many``).
"""

from .client import AllenClient

__all__ = ["AllenClient"]
