"""A local Allen API server (loopback HTTP, real formats, fault injection) for tests and offline
work.

    from allen_local_api.server import LocalAllenServer

    with LocalAllenServer(port=0) as server:     # or: napari-allen local-api --port 8765
        ...  # point NAPARI_ALLEN_API_URL (or AllenSDK's base_uri) at server.url

Modules, one job each:

- ``server``: threaded HTTP/1.1 server, request log, latency and fault injection, lifecycle;
- ``app``: URL routing to fault-free responses; ``faults``: the fault plan;
- ``rma``: RMA query parsing; ``query``: filters, joins, order, paging, include, tabular;
- ``models``: the RMA models; ``catalog``: tables from the bundled real files;
- ``grids``: real and synthetic grid files (zip, MetaImage, gzip NRRD) with an in-memory LRU;
- ``synthetic``: deterministic synthetic ISH and connectivity grids;
- ``services``: connected services (injection structure / coordinate, target spatial);
- ``unionize``: StructureUnionize and ProjectionStructureUnionize from the grids;
- ``formats``: byte-exact JSON/XML/CSV envelopes, ``.mhd``, NRRD headers, zips.

Allen data © Allen Institute for Brain Science (Allen Mouse Brain Atlas, Allen Mouse Brain
Connectivity Atlas, brain-map.org), used under the Allen Institute terms of use.
"""
