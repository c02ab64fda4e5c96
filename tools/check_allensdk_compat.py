"""Check that the real AllenSDK works unchanged against the local Allen API server.

AllenSDK pins old numpy/pandas, so it lives in a throwaway venv, never in the project's:

    python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install allensdk
    .venv/bin/napari-allen local-api --port 18765 &        # the project's server
    /tmp/sdkvenv/bin/python tools/check_allensdk_compat.py http://127.0.0.1:18765

Each check prints OK or FAIL with the reason; the exit code is the number of failures. Only
AllenSDK and the standard library are imported here.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import zipfile


def main(base: str) -> int:
    from allensdk.api.queries.grid_data_api import GridDataApi
    from allensdk.api.queries.mouse_connectivity_api import MouseConnectivityApi
    from allensdk.api.queries.rma_api import RmaApi

    rma = RmaApi(base_uri=base)
    grid = GridDataApi(base_uri=base)
    mca = MouseConnectivityApi(base_uri=base)
    tmp = tempfile.mkdtemp(prefix="sdk-compat-")

    def nrp1_sets():
        rows = rma.model_query("SectionDataSet", criteria="products[id$in1],genes[acronym$eq"
                               "'Nrp1'],plane_of_section[name$eq'coronal']", include=["genes"],
                               num_rows=50)
        assert [r["id"] for r in rows] == [74272479], rows
        return "Nrp1 coronal = 74272479"

    def structures():
        rows = rma.model_query("Structure", criteria="[graph_id$in1]", num_rows="all",
                               order=["structures.graph_order"], count=False)
        assert len(rows) == 1327 and rows[0]["acronym"] == "root"
        return f"{len(rows)} structures"

    def grid_zip():
        path = os.path.join(tmp, "nrp1.zip")
        grid.download_expression_grid_data(74272479, path=path)
        names = zipfile.ZipFile(path).namelist()
        assert names == ["data_set.xml", "energy.raw", "energy.mhd"], names
        path2 = os.path.join(tmp, "prox1.zip")
        grid.download_expression_grid_data(69289763, include=["energy", "density"], path=path2)
        return f"{names}; {zipfile.ZipFile(path2).namelist()}"

    def projection_nrrd():
        import nrrd  # pynrrd, an AllenSDK dependency

        path = os.path.join(tmp, "pd.nrrd")
        mca.download_projection_density(path, 158375425, 100)
        data, header = nrrd.read(path)
        assert data.shape == (132, 80, 114), data.shape
        return f"projection_density {data.shape} {data.dtype} max {float(data.max()):.3f}"

    def experiments_api():
        rows = mca.get_experiments_api()
        assert len(rows) == 2992
        return f"{len(rows)} ApiConnectivity records"

    def source_search():
        rows = mca.experiment_source_search(injection_structures=["VISp"],
                                            primary_structure_only=True)
        assert rows and {r["structure-abbrev"] for r in rows} == {"VISp"}
        return f"{len(rows)} VISp experiments"

    def spatial_search():
        rows = mca.experiment_spatial_search(seed_point=[6900, 5050, 6450])
        assert rows and rows[0]["path"][-1]["density"] == 0
        return f"{len(rows)} lines, densest {rows[0]['density']}"

    def coordinate_search():
        rows = mca.experiment_injection_coordinate_search(seed_point=[7070, 4360, 7650])
        assert rows[0]["distance"] == 0
        return f"{len(rows)} ranked experiments"

    def unionizes():
        rows = mca.get_structure_unionizes([158375425], is_injection=False,
                                           hemisphere_ids=[1, 2], include=["structure"])
        assert rows and "acronym" in rows[0]["structure"]
        return f"{len(rows)} ProjectionStructureUnionize rows"

    def connectivity_cache():
        # MouseConnectivityCache with base_uri: experiments, ontology, grids, unionizes (its
        # annotation download uses a hard-coded files host, so it is not exercised here).
        from allensdk.core.mouse_connectivity_cache import MouseConnectivityCache

        mcc = MouseConnectivityCache(manifest_file=os.path.join(tmp, "mcc", "manifest.json"),
                                     resolution=100, base_uri=base)
        experiments = mcc.get_experiments(dataframe=True)
        vpm = mcc.get_structure_tree().get_structures_by_acronym(["VPM"])[0]
        density, _ = mcc.get_projection_density(158375425)
        unionizes = mcc.get_structure_unionizes([158375425], is_injection=False)
        assert len(experiments) == 2992 and vpm["id"] == 733 and density.shape == (132, 80, 114)
        path = vpm["structure_id_path"]
        return f"{len(experiments)} experiments, VPM path {path}, {len(unionizes)} unionizes"

    checks = [nrp1_sets, structures, grid_zip, projection_nrrd, experiments_api, source_search,
              spatial_search, coordinate_search, unionizes, connectivity_cache]
    failures = 0
    for check in checks:
        started = time.perf_counter()
        try:
            detail = check()
            print(f"OK   {check.__name__:18s} {time.perf_counter() - started:5.2f} s  {detail}")
        except Exception as exc:  # noqa: BLE001 (report every check, then exit with the count)
            failures += 1
            print(f"FAIL {check.__name__:18s} {exc!r}")
            traceback.print_exc(limit=2)
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18765"))
