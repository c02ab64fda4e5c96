"""Client of the Allen Brain Atlas API: queries, paging, retries, cache, downloads (no Qt).

- :mod:`.rma`: query building from values; :mod:`.http`: sessions, retries, validation;
- :mod:`.cache`: metadata database and verified file store;
- :mod:`.base`: URLs, transport, file store, RMA paging shared by the domain APIs;
- per domain (as AllenSDK): :mod:`.ish`, :mod:`.connectivity`, :mod:`.ontology`, :mod:`.grids`;
  :mod:`.frames`: DataFrame shaping of their records;
- :mod:`.client`: ``AllenClient``, the façade combining the domains;
- :mod:`.batch`: concurrent, resumable batch downloads (``download_many``, ``iter_downloads``).
"""

from .client import AllenClient

__all__ = ["AllenClient"]
