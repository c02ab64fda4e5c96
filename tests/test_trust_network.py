"""Fast, clear offline failures and a metadata cache that cannot hurt (issue #9 items 2 and 8).

Real HTTP to the local server; the tests damage the cache files themselves."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import sqlite3
import time

import pytest

from napari_allen import cli
from napari_allen.api.client import AllenClient
from napari_allen.api.http import HttpTransport
from napari_allen.errors import AllenApiError, AllenUnreachableError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with block ends: refused


def db_path(client) -> str:
    return str(client.http.cache_path)


# --- offline ------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["refused", "http://nohost.invalid"])
def test_unreachable_server_fails_fast_with_one_sentence(address):
    url = f"http://127.0.0.1:{closed_port()}" if address == "refused" else address
    client = AllenClient(url, retries=5, backoff=0.5)
    start = time.monotonic()
    with pytest.raises(AllenUnreachableError) as info:
        client.search_ish(["Nrp1"])
    elapsed = time.monotonic() - start
    assert elapsed < 2.0
    text = str(info.value)
    assert text.count("\n") == 0 and text.startswith(f"Cannot reach the Allen API at {url} (")
    for needed in ("NAPARI_ALLEN_API_URL", "napari-allen local-api", "no results are cached"):
        assert needed in text
    assert "%5B" not in text and "Max retries" not in text  # no encoded query, no urllib3
    assert isinstance(info.value, AllenApiError)  # callers catching AllenApiError still work


def test_unreachable_message_says_cached_results_exist(client, allen_api):
    client.search_ish(["Nrp1"])
    cut = AllenClient(f"http://127.0.0.1:{closed_port()}", cache_dir=client.cache_dir)
    with pytest.raises(AllenUnreachableError, match=r"\d+ cached responses exist .*--offline"):
        cut.search_ish(["Gad1"])


def test_grid_download_from_unreachable_server_fails_fast(tmp_path):
    client = AllenClient(f"http://127.0.0.1:{closed_port()}", retries=5, backoff=0.5)
    start = time.monotonic()
    with pytest.raises(AllenUnreachableError):
        client.grid_zip(74272479)
    assert time.monotonic() - start < 2.0


def test_retries_stop_within_the_budget(allen_api, tmp_path):
    allen_api.faults.add("http500", path_contains="query.json", times=1000)
    transport = HttpTransport(tmp_path / "c.sqlite", retries=50, backoff=0.2, retry_budget=1.5)
    start = time.monotonic()
    with pytest.raises(AllenApiError, match="retries stopped after"):
        transport.get_json(f"{allen_api.url}/api/v2/data/query.json?q=model::Gene")
    assert time.monotonic() - start < 3.0
    assert 2 <= len(allen_api.requests) < 50


def test_results_from_the_cache_are_labelled(client, allen_api):
    with client.http.served_block() as first:
        client.search_ish(["Nrp1"], plane="coronal")
    assert first.network >= 1 and first.label == ""
    with client.http.served_block() as second:
        client.search_ish(["Nrp1"], plane="coronal")
    assert second.from_cache and second.label == "from the cache"


def test_cli_labels_cached_results_and_unreachable_errors(allen_api, capsys, monkeypatch):
    assert cli.main(["search-ish", "Nrp1", "--plane", "coronal"]) == 0
    assert "from the cache" not in capsys.readouterr().err
    assert cli.main(["search-ish", "Nrp1", "--plane", "coronal"]) == 0
    assert "note: results from the cache" in capsys.readouterr().err
    monkeypatch.setenv("NAPARI_ALLEN_API_URL", f"http://127.0.0.1:{closed_port()}")
    assert cli.main(["search-ish", "Gad1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot reach the Allen API" in err
    assert "Traceback (most recent" not in err


def test_cli_refuses_unsafe_gene_patterns_with_a_reason(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["search-ish", "Nrp1'"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be used safely" in err and "Nrp1" in err and "Traceback (most recent" not in err


# --- cache damage -------------------------------------------------------------------------
def _fill(client) -> None:
    client.search_ish(["Nrp1"], plane="coronal")
    client.close()


def garbage_header(path):
    with open(path, "r+b") as fh:
        fh.write(b"this is not sqlite at all")


def truncated(path):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 3)


def foreign(path):
    os.remove(path)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    con.close()


def random_pages(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        for offset in range(4096, size, 4096 * 2):
            fh.seek(offset)
            fh.write(os.urandom(512))


@pytest.mark.parametrize("damage", [garbage_header, truncated, foreign, random_pages],
                         ids=lambda f: f.__name__)
def test_damaged_database_is_moved_aside_and_rebuilt(client, allen_api, damage, caplog):
    _fill(client)
    checkpoint = sqlite3.connect(db_path(client))
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    damage(db_path(client))
    caplog.set_level(logging.WARNING)
    fresh = AllenClient(backoff=0.01, cache_dir=client.cache_dir)
    frame = fresh.search_ish(["Nrp1"], plane="coronal")
    assert 74272479 in set(frame["experiment_id"])
    fresh.close()
    if damage is not random_pages or any("moved aside" in r.message for r in caplog.records):
        warnings = [r.message for r in caplog.records if "moved aside" in r.message]
        assert len(warnings) == 1 and "\n" not in warnings[0]
        assert (client.cache_dir / "http_cache.sqlite.damaged").exists()
    if damage is foreign:  # the other program's data is kept, untouched
        con = sqlite3.connect(str(client.cache_dir / "http_cache.sqlite.damaged"))
        assert con.execute("SELECT total FROM invoices").fetchall() == [(9.5,)]
        con.close()


@pytest.mark.parametrize("argv", [["search-ish", "Nrp1"], ["cache-info"],
                                  ["download", "--experiments", "74272479", "--out", "OUT"]])
def test_no_command_shows_a_traceback_for_cache_damage(allen_api, tmp_path, capsys, caplog,
                                                       argv):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert cli.main(["search-ish", "Nrp1"]) == 0
    cache = tmp_path / "napari-allen-cache" / "http_cache.sqlite"
    garbage_header(cache)
    capsys.readouterr()
    caplog.set_level(logging.WARNING)
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback (most recent" not in err
    # One warning line (the CLI's logging prints it on stderr); downloading by experiment id
    # needs no metadata, so it does not even open the database.
    expected = [] if argv[0] == "download" else ["napari_allen.api.metacache"]
    assert [r.name for r in caplog.records if "moved aside" in r.getMessage()] == expected


def _rows(path):
    con = sqlite3.connect(path)
    rows = con.execute("SELECT key, value FROM responses").fetchall()
    con.close()
    return rows


def _set_all_rows(path, value):
    con = sqlite3.connect(path)
    con.execute("UPDATE responses SET value = ?", (value,))
    con.commit()
    con.close()


def test_cache_rows_are_json_never_pickle(client, allen_api, tmp_path):
    _fill(client)
    rows = _rows(db_path(client))
    assert rows
    for _key, value in rows:
        text = value if isinstance(value, str) else value.decode()
        assert text.lstrip().startswith("{")  # JSON, not a pickle stream


class _Boom:
    def __reduce__(self):
        import os

        return (os.mkdir, (str(BOOM),))


BOOM = None


def test_a_crafted_pickle_row_is_never_unpickled(client, allen_api, tmp_path):
    global BOOM
    BOOM = tmp_path / "pwned"
    _fill(client)
    _set_all_rows(db_path(client), pickle.dumps(_Boom()))
    before = len(allen_api.requests)
    fresh = AllenClient(backoff=0.01, cache_dir=client.cache_dir)
    assert not fresh.search_ish(["Nrp1"], plane="coronal").empty
    assert not BOOM.exists()
    assert len(allen_api.requests) > before  # refetched instead


@pytest.mark.parametrize("value", [
    "not json", '{"valid": "json", "but": "no response"}',
    b"\xff\xfe binary",
])
def test_undecodable_rows_are_refetched(client, allen_api, value):
    _fill(client)
    _set_all_rows(db_path(client), value)
    before = len(allen_api.requests)
    fresh = AllenClient(backoff=0.01, cache_dir=client.cache_dir)
    assert 74272479 in set(fresh.search_ish(["Nrp1"], plane="coronal")["experiment_id"])
    assert len(allen_api.requests) > before


def test_an_edited_body_that_fails_validation_is_dropped_and_refetched(client, allen_api):
    import json

    _fill(client)
    path = db_path(client)
    con = sqlite3.connect(path)
    for key, value in con.execute("SELECT key, value FROM responses").fetchall():
        doc = json.loads(value)
        # The stored body edited into an error page / broken JSON.
        if isinstance(doc.get("_decoded_content"), (dict, list)):
            doc["_decoded_content"] = {"success": False, "msg": "edited"}
        else:
            doc["_content"] = "PGh0bWw+"  # base64 of "<html>"
        con.execute("UPDATE responses SET value = ? WHERE key = ?", (json.dumps(doc), key))
    con.commit()
    con.close()
    before = len(allen_api.requests)
    fresh = AllenClient(backoff=0.01, cache_dir=client.cache_dir)
    frame = fresh.search_ish(["Nrp1"], plane="coronal")
    assert 74272479 in set(frame["experiment_id"])
    assert len(allen_api.requests) > before
