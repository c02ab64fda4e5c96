"""How long does the GUI freeze, per user action? (issue #13)

Drives a real napari viewer (under Xvfb when there is no display) with a 10 ms ``QTimer``
heartbeat on napari's own event loop. For every action the longest gap between two heartbeats
is the longest time the user could not interact: that is what is printed, next to napari's own
cost of adding a plain 528x320x456 float32 image (the baseline) measured in the same run, and
napari's cost of adding one small plain layer (a 132x80x114 float32 image, the size of one 100 µm
grid): the floor of any dock action that shows a new layer (napari's insert, layer controls
and first repaint), printed as a second ratio for the dock actions.

Actions: File > Open Sample (each sample), adding each dock, Connectivity search "VISp" (results
arrive), loading 3 experiments, Gene expression "expression per structure", a spatial search of
~400 seeds (lines layers added), opening the bundled 25 µm annotation NRRD (first open, in a
fresh cache, and a second open) and File > Open Sample > CCF reference (that annotation and the
brain outline; in a fresh cache, then again). Group "more" (``_more``): the Connectivity
dock's Average (with the individual-experiment stack; grouped as one stacked layer), Threshold
and structure meshes, the Gene expression dock's grid annotation, structure similarity and
whole-plane store (download of three genes + open, open again, two store questions). Group
"structures" (``_structures``): the Structures dock's tree, search, first cursor look-up, CCF
reference and ticks. Group "first" (``_first_docks``): each dock as the first thing opened in a
new napari session, each in a process of its own, until its background warm-up has run (the
other dock rows come after samples or other docks, with the plugin's imports long done). The
local Allen API server runs in a child process (``_child_server``), as the real API runs on
another machine: in-process, its own JSON and synthetic-data work would hold this interpreter's
GIL and count as plugin freezes. The cache folder is a temporary
one (deleted at the end).

Targets: every dock action <= 200 ms (worst run); opening a file or sample no longer than napari
adding the same layers as plain in-memory arrays of the same size and type (measured right after
each open, in the same viewer: the "plain arrays" rows; median over runs). For the file
opens a reference row also shows napari opening the same layer from a plain ``.npy`` file with
its own reader (``viewer.open`` repaints the window inside the call through its "Opening
Files" progress bar, whatever the reader: a cost no plugin reader can avoid). The big-image row
stays as the issue's original reference point ("/ base"). Repeat runs (``--repeat``) matter:
the first run of a process also pays napari's first-layer-ever costs (shader builds).

A last reference row per run times one full garbage collection (``gc.collect()``) of the
process as the actions left it: the pause any action pays when the interpreter's own
collection of napari's heap (napari, its layers and the docks: ~250-350k objects here) falls
due inside it, as it does after every few layers napari adds, whoever adds them. It is about
the dock target itself on this machine (140-250 ms), so an action it lands in cannot meet the
target whatever the plugin does; with ``BENCH_FREEZE_GAPS`` the "no GC" column shows each
action's worst freeze among those no such collection fell in. The script drives Qt with
``processEvents`` (no ``exec``), and runs its own steps that delete widgets (clearing the
layers between actions, removing a dock) inside the event loop (``in_event_loop``), as a
click's handler would: Qt then deletes them as in napari.

Each open is also followed, for reference only, by napari adding the same arrays with the
plugin's display settings (colormaps, contrast limits, blending, units, multiscale): the
"plain arrays" twin has napari's defaults, so the gap to it includes napari's cost of what the
plugin asks it to show; the gap to the settings twin is the plugin's own work.

Fairness of the "plain arrays" twin: it runs right after the open it is compared with, in the
same viewer, so both must meet napari in the same state. Before the first timed open, each run
adds (untimed) one tiny napari Labels and one Surface layer (``_warm_layer_types``): napari's
own first-of-a-type costs (the pandas import, ~150 ms, that any Labels layer triggers; each
viewer's shader builds for labels and meshes) are then paid by neither side; before, the
first open showing such a layer paid them and its twin did not. Everything
of the plugin's still counts: in the first run its first call imports its own modules, decodes
the bundled files and builds the atlas colormap (once per process, ~0.1 s on this machine, all
inside the timed open), and an image-only open must not import pandas at all
(``tests/test_opening_cost.py`` checks, in fresh interpreters, which heavy modules each sample
and reader path imports).

Where the remaining time goes (profiled on the main thread: napari 0.9, Xvfb + Mesa llvmpipe,
2 cores). The plugin's own handlers now add no volume scans, imports or table work to a turn,
and napari's work for each layer a dock adds is split over event-loop turns
(``widgets/_view.add_in_turns``, through ``widgets/_tasks``' delivery queue: one step per turn,
never nested in napari's activity-bar ``processEvents``, each step followed by the repaint it
causes before the next): when the layer brings new axes (the first layer; a 4-D stack or
plane store into a 3-D viewer) the dims sliders (rebuilt with the new ones hidden, the
canvas/slider layout held so the canvas keeps its size), their range (the new sliders appear,
the canvas shrinks once and paints once) and the axis labels, each before the insert, so
napari's insert finds its dims ready (its dims order event, held back meanwhile, comes in the
turn after it: the camera fit repaints every layer); the insert (hidden and unselected: layer
controls, vispy node, scene graph; like the slider rebuild it changes nothing drawn, so the
canvas paint napari asks for waits for the next event-loop pass), its
selection (napari's layer-controls page switch repaints the canvas synchronously, then the new
controls' first paint), showing it (slicing, texture upload, shader builds), the focus. What is
left is napari's:

- each of those steps is napari's (the insert ~50-120 ms, each repaint of the canvas 30-130 ms
  under llvmpipe); the "one layer" row is napari adding a plain 132x80x114 image in one call,
  all of it in one turn (the "/ layer" column);
- the first dock opened pays the canvas's first redraw at its new size; the axes overlay's
  creation and first draw (shader source parsing and builds) and the scale bar's creation and
  first draw come each in a later turn of its own (``show_orientation_stepwise``, through the
  same delivery queue), on an empty viewer (as here) when the first layer comes: in this script
  among the steps of "load 3 experiments"; the glyphs of their text (signed distance fields
  computed on the CPU, ~5 ms each) are rendered into napari's overlay font a few per turn as
  soon as a dock opens, so those first draws no longer render them (the axes labels' repaint:
  ~135 -> ~60 ms main-thread CPU);
- while a task runs, napari's activity indicator repaints the whole window about 30 times a
  second (20-50 ms each under llvmpipe with the GL canvas in the window), and every value or
  description change of napari's activity bar runs ``processEvents`` (one more repaint): the
  plugin updates that bar at most every 0.5 s (its own status row shows every step);
- the first open of a 10/25 µm grid builds its multiscale cache in a converter process
  (``child_process``: its own interpreter, niced, so it never holds this one's GIL; in a
  thread of this process the same conversion held the GIL in 100-300 ms pieces). What this
  process still does until the layer shows is napari's activity bar (created once, ~100-200
  ms, then a few updates) and the layer's refresh when the cache is complete (reading the
  shown planes' chunks, ~50 ms; no zarr import: ``io/pyramid_chunks``);
- the 25 µm annotation (reader, CCF reference sample, Structures dock) against its plain twin:
  the plugin's own part of the sample is ~3-6 ms (the outline read once per process, atlas
  colormaps copied over shared colour arrays and a ready lookup table), and napari's call
  costs about the same for both; what is left is napari's *multiscale* Labels handling, the
  same with plain in-memory levels and napari's default colormap (atlas colours and the
  hover features cost nothing measurable): it slices the coarsest level at creation
  (twice: a ``colormap`` argument refreshes too), switches to level 0 in its first draws
  (one read of a 25 µm plane, ~20 ms: 40 chunks decoded by the main thread itself - blosc's
  thread pool made it ~35 ms - and relabelled in uint32; the repeat comes from the slices
  kept) and renders the canvas once more than for a single-scale layer (~50 ms of llvmpipe
  CPU per 1600x1000 frame here). In-viewer main-thread CPU of the warm 25 µm open: plain
  single-scale ~200 ms, napari's own plain multiscale ~226, the plugin's layer ~234 (its
  reader ~2 ms; the rest is napari's multiscale and "Opening Files" bar). Pre-setting level 0
  and the corner pixels before the insert saves the slices, not the extra frame. Full
  garbage collections (120-360 ms over napari's ~230k objects) land in some of these
  actions (seen in the CCF reference's and a tick's longest gap, main thread or worker);
- the Structures dock: its tree (1,327 items, built detached, one swatch per colour) comes in
  a turn of its own after the dock's first paint (~20 ms), a search touches only the items
  whose visibility changes (~1-3 ms), and the first look-up under the cursor opens the 25 µm
  annotation in a worker (the row says so meanwhile). What is left in its CCF reference and
  ticks is napari's steps for each layer (a multiscale Labels or a mask: vispy node and the
  labels polygon overlay ~100-150 ms; a Surface: shader setup ~60 ms), the task row's and
  activity bar's repaints while the one-time annotation index is built (the task's napari
  activity bar is created when it starts: ~80-160 ms on this machine), and CPU contention
  with the child process that builds the index and meshes (index ~4 s, mesh ~0.1-0.3 s;
  ``child_process``, niced: it holds no GIL of this interpreter - in a worker thread
  fast-simplification and scipy held it 0.1-0.25 s at a time, e.g. decimating CP);
- the spatial search adds its layers in turns too (``add_in_turns``); what is left per turn is
  napari's: a Shapes insert (vispy node ~80 ms, controls ~40 ms) and the first draw of each
  new layer type (shader builds, ~50-100 ms). Its queries pause while a partial result is
  shown (``emit(wait=True)``): four query threads taking the GIL back after each of napari's
  Qt calls made the same first insert about 3x longer. A re-run's cached seeds are asked on
  the task's own thread (``seed_search._cache_first``): on four pool threads, each ~1.4 ms of
  Python holding the GIL, they left napari's main thread a fifth of it (no-GC worst of the
  re-run 296-304 -> 139-141 ms). A re-run puts its paths into the Shapes layer shown when
  napari built them cheaply in the worker (``_common.shapes_cheap_in_place``: napari's compiled
  ``bermuda`` triangulation, a dependency, builds 400 paths in 36-70 ms of CPU, and the data
  setter redoes that on the main thread), so it no longer pays napari's removal collection
  (re-run 238-253 -> 164-182 ms, main-thread CPU 600-790 -> 300-430 ms; an automatic full
  collection can still fall due in it);
- the interpreter compiles the plugin's sources on every import when ``PYTHONDONTWRITEBYTECODE``
  is set (as on the development machine): ~30 ms more per first dock or sample than installed;
- full garbage collections of the interpreter (140-250 ms with napari's ~250-350k objects; the
  "full garbage collection" row) happen at any allocation once enough objects survived since
  the last one, in napari's own plain add as well: napari's layers are most of those objects
  (~8-10k tracked objects per layer, Qt widgets and vispy visuals; the plugin's own modules
  and docks add ~20k to the heap), so an action adding several layers (the structure meshes,
  a mask and a mesh) is where one usually falls; the plugin builds no long-lived object
  graphs of its own (spatial-search records keep tuples, which leave GC tracking);
- a new result for a layer already shown (loading the same experiments again, the CCF
  reference again) is shown by that layer, in place (``widgets/_in_place``: its data and every
  setting napari records for the new layer): no removal, so no ``gc.collect()``, and no insert
  (load the same 3 experiments again: ~320 -> ~70 ms; CCF reference again: ~600 -> ~80 ms); a
  Shapes result napari's Shapes data setter would take too long to triangulate again on the
  main thread replaces its layer, the removal in a turn of its own;
- removing layers: napari ends every removal outside a batch with a full ``gc.collect()``;
  the docks remove several layers in one batch (``widgets/_removal``: the Structures dock's
  "Untick all" and untick, the spatial search's stale layers), so "Untick all" of three
  layers pays one collection instead of three (~610 -> ~270 ms here); left is that one
  collection and napari's removal of each layer (its vispy node and controls) in the same turn
- the plugin's worker threads: run headless against a 1 ms probe thread, the load and search
  tasks hold the GIL no longer than 8 ms at a time after their first use (zlib-ng inflates
  with the GIL released, in 1 MiB steps); the docks that add layers wait until each one is
  shown before loading the next (``emit(wait=True)``), so their CPU (25-55 ms per gap before)
  no longer lands inside napari's steps. ``BENCH_FREEZE_GAPS=1`` splits each long gap into
  main-thread CPU, waiting for a CPU, and other threads' CPU;
- group "more": every layer is built in a worker (the average and its individual-experiment
  stack, the threshold mask, each structure's Surface - the meshing task waits while it is
  added -, the grid annotation's Labels, the correlation lines, a plane store's lazy 4-D
  layer: a plain view over the Zarr store, no dask) and added with ``add_in_turns``; a layer
  bringing a new axis (the individual stack, 4-D, into a 3-D viewer) no longer makes napari
  rebuild every dims slider inside its insert (that turn took ~124 ms main-thread CPU plus the
  repaint); the slider rebuild, a turn of its own, no longer resizes the canvas back and forth
  (showing a slider lays out the window at once: two full canvas paints of every layer, one
  inside the handler, ~228 ms with 8 other volumes), and no step pays a canvas paint of every
  layer on top of ~35-65 ms of its own work: with 8 other volumes the worst turn of the Average
  is a ~10-20 ms step plus one canvas paint. Left is napari's: a Labels insert (controls,
  vispy node, polygon overlay) costs ~1.5x an image's, and its first draw builds its shaders;
  each Surface insert is ~60-135 ms of napari's on the main thread; the meshing itself runs
  in a child process (``atlas/meshes.iter_structure_meshes``; in a worker thread its
  scipy/skimage C calls held the GIL 100-250 ms at a time under load);
- other processes on the machine stretch all of it (report ``uptime`` with the numbers).

With ``BENCH_FREEZE_GAPS=1`` each action also prints its five longest gaps and, for the
longest ones over 150 ms, what they were (``_freeze_diagnostics``: main-thread CPU, time it
waited for a CPU, worker threads running meanwhile, full garbage collections), and the summary
adds a "no GC" column: the action's worst freeze among those no full collection fell in. The
thread clocks are sampled by a process of its own: read on the main thread at every tick, their
~60 system calls each gave the GIL to busy worker threads and waited up to 5 ms to get it back
(~1.7 s per reading with 4 threads running Python), lengthening the freezes they explained. With
``BENCH_FREEZE_STACKS=1`` as well, the main thread's Python stack is sampled during long gaps
and the calls most samples share are printed (this lengthens the sampled freezes a little:
name freezes with it, time them without).

    PYTHONPATH=src python benchmarks/bench_gui_freeze.py [--repeat N] [--seeds 400]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _freeze_diagnostics  # noqa: E402 - benchmarks/ on the path first

DOCK_TARGET_MS = 200.0
BASELINE_SHAPE = (528, 320, 456)
SMALL_SHAPE = (132, 80, 114)  # one 100 µm grid


def _ensure_display():
    """Start a virtual X server if there is no display (returns it, or None)."""
    if os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32"):
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=(1600, 1000), color_depth=24)
    display.start()
    return display


class Heartbeat:
    """A 10 ms QTimer whose tick times (``time.perf_counter``) reveal event-loop freezes."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.clocks = self.gc_log = self.stacks = None  # BENCH_FREEZE_GAPS: what each was
        if os.environ.get("BENCH_FREEZE_GAPS") and _freeze_diagnostics.available():
            self.clocks, self.gc_log = _freeze_diagnostics.ThreadClocks(), \
                _freeze_diagnostics.GcLog()
            if os.environ.get("BENCH_FREEZE_STACKS"):  # perturbs what it samples: opt-in
                self.stacks = _freeze_diagnostics.StackSampler(
                    lambda: self.ticks[-1] if self.ticks else None)

    def start(self) -> None:
        self.ticks.clear()
        if self.clocks is not None:
            self.clocks.clear()
            self.gc_log.__enter__()
            if self.stacks is not None:
                self.stacks.start()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        if self.gc_log is not None:
            self.gc_log.__exit__()
            if self.stacks is not None:
                self.stacks.stop()

    def close(self) -> None:
        """End the diagnostics' sampler process (if any)."""
        if self.clocks is not None:
            self.clocks.close()

    def explain_gaps(self, t0: float, t1: float, over_ms: float = 150.0, top: int = 3):
        """Lines saying what the ``top`` longest gaps over ``over_ms`` between two ticks were
        (main-thread CPU, CPU wait, worker threads, full GCs: ``_freeze_diagnostics``)."""
        if self.clocks is None:
            return []
        ticks = self.ticks
        gaps = [(ticks[i + 1] - ticks[i], i) for i in range(len(ticks) - 1)
                if t0 < ticks[i] and ticks[i + 1] < t1 and ticks[i + 1] - ticks[i] > over_ms / 1e3]
        return [f"      {1000 * gap:.0f} ms: {self.clocks.explain(ticks[i], ticks[i + 1])}"
                f"{self.gc_log.within(ticks[i], ticks[i + 1])}"
                f"{self.stacks.within(ticks[i], ticks[i + 1]) if self.stacks else ''}"
                for gap, i in sorted(gaps, reverse=True)[:top]]

    def _ticks_within(self, t0: float, t1: float) -> list[float]:
        """The ticks in ``[t0, t1]``, the window ends counted as ticks."""
        return [t0] + [t for t in self.ticks if t0 < t < t1] + [t1]

    def gaps_ms(self, t0: float, t1: float) -> np.ndarray:
        """Intervals without a tick in ``[t0, t1]`` (the window ends count as ticks), ms."""
        return 1000.0 * np.diff(self._ticks_within(t0, t1))

    def longest_gap_ms(self, t0: float, t1: float) -> float:
        return float(np.max(self.gaps_ms(t0, t1)))

    def longest_gap_without_gc_ms(self, t0: float, t1: float) -> float:
        """The longest gap in ``[t0, t1]`` during which no full garbage collection ran (NaN
        without the diagnostics): the interpreter's collections (napari's heap, ~0.15-0.25 s
        each here) land in whichever action allocates when they fall due."""
        if self.gc_log is None:
            return float("nan")
        ticks = self._ticks_within(t0, t1)
        free = [1000.0 * (b - a) for a, b in zip(ticks[:-1], ticks[1:], strict=True)
                if not self.gc_log.overlaps(a, b)]
        return max(free, default=0.0)


class Measured(NamedTuple):
    """One timed action: its longest freeze (ms), wall time (s), main-thread CPU (ms; from the
    start to the end of the settle time, less sensitive to other processes' load than the
    wall-clock freeze) and its longest freeze in which no full garbage collection ran (ms;
    NaN without ``BENCH_FREEZE_GAPS``)."""

    freeze: float
    wall: float
    cpu: float
    freeze_without_gc: float


def measure(app, beat: Heartbeat, start: Callable[[], Callable[[], bool] | None], *,
            settle_s: float = 0.4, timeout_s: float = 300.0) -> Measured:
    """Run ``start`` from inside the event loop; wait until the predicate it returns is true
    (plus ``settle_s`` so the first draw of new layers counts)."""
    from qtpy.QtCore import QTimer

    state: dict = {}

    def kick() -> None:
        state["t0"], state["cpu0"] = time.perf_counter(), time.thread_time()
        state["done"] = start() or (lambda: True)

    beat.start()
    QTimer.singleShot(0, kick)
    deadline = time.perf_counter() + timeout_s
    finished = None
    while time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.002)
        if "done" not in state:
            continue
        if finished is None and state["done"]():
            finished = time.perf_counter()
        if finished is not None and time.perf_counter() - finished >= settle_s:
            break
    else:
        raise TimeoutError("action did not finish in time")
    t1 = time.perf_counter()
    cpu_ms = 1000.0 * (time.thread_time() - state["cpu0"])
    beat.stop()
    if os.environ.get("BENCH_FREEZE_GAPS"):  # diagnostics: the five longest gaps, ms
        gaps = beat.gaps_ms(state["t0"], t1)
        print("    longest gaps:", np.sort(gaps)[-5:][::-1].round(0).tolist(),
              f"{(gaps > 100).sum()} gaps > 100 ms, {gaps[gaps > 100].sum():.0f} ms in them")
        for line in beat.explain_gaps(state["t0"], t1):
            print(line)
    # processEvents + sleep(2 ms) drives the loop here; napari's own exec loop behaves alike.
    return Measured(beat.longest_gap_ms(state["t0"], t1), finished - state["t0"], cpu_ms,
                    beat.longest_gap_without_gc_ms(state["t0"], t1))


def in_event_loop(app, fn: Callable[[], object]) -> None:
    """Run ``fn`` from inside the event loop (a zero timer), as a click's handler would, then
    let the loop run a while. This script drives Qt with ``processEvents``, never ``exec``: Qt
    then deletes the widgets a step schedules for deletion (``deleteLater``: napari's layer
    controls of removed layers, a removed dock) only if the step ran inside an event handler;
    called from the script's top level, ~330 widgets per cleared pair of layers (and a whole
    dock) stayed in the window for the rest of the run, unlike in napari."""
    from qtpy.QtCore import QTimer

    done: list = []
    QTimer.singleShot(0, lambda: done.append(fn()))
    while not done:
        app.processEvents()
    for _ in range(20):
        app.processEvents()


def _shown_viewer():
    """A new napari viewer, shown at 1600x1000 and settled (0.5 s of events); with its
    QApplication."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    return viewer, app


#: The docks, in the order napari's Plugins menu lists them.
DOCK_TITLES = ("Structures", "Connectivity", "Gene expression", "Spatial search")


def _first_docks(record) -> None:
    """Group "first": each dock as the first thing opened from the Plugins menu of a new napari
    session, each in a process of its own (this one has imported the plugin, and whatever
    the plugin imports, long ago). A user meets this freeze once per session, with whichever
    dock comes first; the other rows measure docks opened after samples or other docks."""
    import json
    import subprocess

    for title in DOCK_TITLES:
        out = subprocess.run([sys.executable, __file__, "--first-dock", title], check=True,
                             capture_output=True, text=True, timeout=600).stdout
        result = json.loads(out.strip().splitlines()[-1])
        record(f"add dock: {title} (first in a new napari session)", "dock",
               Measured(**result))


def _first_dock_child(title: str) -> None:
    """In a new process: show napari's window, then add dock ``title`` as from the Plugins
    menu; print the :class:`Measured` as JSON (last line)."""
    import json

    viewer, app = _shown_viewer()
    beat = Heartbeat()

    def add():
        viewer.window.add_plugin_dock_widget("napari-allen", title)
        from napari_allen.widgets._tasks import deliveries_idle
        from napari_allen.widgets._warmup import warmed

        # Until the dock's background warm-up (its imports, napari's first-Labels work) and
        # every main-thread step it queued have run: their freezes are the dock's too.
        return lambda: warmed.is_set() and deliveries_idle()
    result = measure(app, beat, add, settle_s=0.5)
    beat.close()
    print(json.dumps(result._asdict()), flush=True)
    viewer.close()


def _idle(*runners) -> Callable[[], bool]:
    return lambda: not any(r.is_running for r in runners)


def _all_runners(widget) -> list:
    from napari_allen.widgets._tasks import TaskRunner

    runners = getattr(widget, "runners", None)  # docks with one runner per tab
    if runners is None:
        runners = [v for v in vars(widget).values() if isinstance(v, TaskRunner)]
    return list(runners)


GROUPS = ("first", "open", "connectivity", "gene", "spatial", "more", "structures")


def run(repeat: int, seeds: int, groups: tuple[str, ...] = GROUPS
        ) -> list[tuple[str, str, list[Measured]]]:
    """All actions, ``repeat`` fresh viewers; rows of (action, kind, one :class:`Measured`
    per run)."""

    from _child_server import ChildServer
    from napari_allen.widgets._common import reset_shared_client

    rows: dict[str, tuple[str, list[Measured]]] = {}

    def record(name: str, kind: str, result: Measured) -> None:
        rows.setdefault(name, (kind, []))[1].append(result)
        print(f"  {name:<52} {result.freeze:8.0f} ms freeze  ({result.wall:.2f} s, "
              f"main-thread CPU {result.cpu:.0f} ms)", flush=True)

    rng = np.random.default_rng(0)
    plain = rng.random(BASELINE_SHAPE, dtype=np.float32)
    annotation = Path(__file__).resolve().parents[1] / "src" / "napari_allen" / "data" / \
        "annotation" / "annotation_25.nrrd"
    with ChildServer(latency_ms=0) as server:
        os.environ["NAPARI_ALLEN_API_URL"] = server.url
        for rep in range(repeat):
            print(f"run {rep + 1}/{repeat}", flush=True)
            with tempfile.TemporaryDirectory(prefix="napari-allen-freeze-") as cache:
                os.environ["NAPARI_ALLEN_CACHE"] = cache
                reset_shared_client()
                if "first" in groups:
                    _first_docks(record)
                viewer, app = _shown_viewer()
                beat = Heartbeat()
                _one_run(app, beat, viewer, plain, annotation, seeds, record, groups)
                # Reference: what any action pays when a full collection of this heap (napari,
                # its layers and the docks, as left by the actions) falls due inside it.
                record("interpreter: one full garbage collection (gc.collect)", "gc",
                       measure(app, beat, lambda: gc.collect() and None, settle_s=0.1))
                beat.close()
                viewer.close()
                for _ in range(20):
                    app.processEvents()
    return [(name, kind, runs) for name, (kind, runs) in rows.items()]


def _one_run(app, beat, viewer, plain, annotation, seeds, record, groups) -> None:
    def fresh() -> None:
        in_event_loop(app, viewer.layers.clear)

    record("napari: add 528x320x456 float32 image (baseline)", "baseline",
           measure(app, beat, lambda: viewer.add_image(plain) and None))
    fresh()
    small = np.ascontiguousarray(plain[:SMALL_SHAPE[0], :SMALL_SHAPE[1], :SMALL_SHAPE[2]])
    record("napari: add 132x80x114 float32 image (one layer)", "floor",
           measure(app, beat, lambda: viewer.add_image(small, name="small") and None))
    fresh()
    if "open" in groups:
        _open_files(app, beat, viewer, annotation, record, fresh)
    if "structures" in groups:  # its own dock, closed again before the others open
        _structures(app, beat, viewer, record, fresh)
    if not set(groups) - {"open", "structures"}:  # no other dock needed
        return
    docks = {}
    for title in ("Connectivity", "Gene expression", "Spatial search"):
        def add(t=title):
            _, docks[t] = viewer.window.add_plugin_dock_widget("napari-allen", t)
        record(f"add dock: {title}", "dock", measure(app, beat, add))
    if "connectivity" in groups:
        _connectivity(app, beat, docks["Connectivity"], record, fresh)
    if "gene" in groups:
        _gene(app, beat, docks["Gene expression"], record, fresh)
    if "spatial" in groups:
        _spatial(app, beat, docks["Spatial search"], seeds, record, fresh)
    if "more" in groups:
        _more(app, beat, docks["Connectivity"], docks["Gene expression"], record, fresh)


class Twin(NamedTuple):
    """One layer now in the viewer as plain in-memory arrays (see :func:`_plain_twins`)."""

    kind: str  # "image", "labels", "surface"
    data: Any  # full resolution; a surface's (vertices, faces, values)
    scale: tuple
    levels: list | None  # every pyramid level, for multiscale data
    settings: dict  # the layer's display settings (``as_layer_data_tuple`` state)


def _plain_twins(viewer) -> list[Twin]:
    """The layers now in ``viewer`` as plain in-memory arrays (full resolution of multiscale
    data), with their layer type, scale and, for multiscale data, every level as a plain
    array: what napari alone would be given to show the same thing, without the plugin's
    colours, metadata or laziness. Surfaces are given as their plain ``(vertices, faces,
    values)`` arrays. Each also keeps the layer's display settings (napari's
    ``as_layer_data_tuple`` state: colormap, contrast limits, blending, scale, units,
    multiscale...), less what only the plugin reads (metadata, features) and the name."""
    twins = []
    for layer in viewer.layers:
        kind = type(layer).__name__.lower()
        levels = None
        if kind == "surface":
            data = tuple(np.array(a) for a in layer.data)
        elif kind in ("image", "labels"):
            if getattr(layer, "multiscale", False):
                levels = [np.array(level) for level in layer.data]
                data = levels[0]
            else:
                data = np.array(layer.data)
        else:
            continue
        settings = layer.as_layer_data_tuple()[1]
        for key in ("metadata", "features", "properties", "name"):
            settings.pop(key, None)
        twins.append(Twin(kind, data, tuple(layer.scale), levels, settings))
    return twins


def _add_plain(viewer, twins: list[Twin], *, multiscale: bool = False) -> None:
    """napari adds ``twins`` in one call each; ``multiscale``: the levels of multiscale ones
    as a plain multiscale layer (napari's own cost of showing a pyramid)."""
    for twin in twins:
        if multiscale and twin.levels is not None:
            getattr(viewer, f"add_{twin.kind}")(twin.levels, scale=twin.scale, multiscale=True)
        else:
            getattr(viewer, f"add_{twin.kind}")(twin.data, scale=twin.scale)


def _add_with_settings(viewer, twins: list[Twin]) -> None:
    """napari builds and adds each of ``twins`` with the layer's own display settings:
    napari's own cost of showing the same thing, so what an open costs over it is the
    plugin's own work."""
    from napari.layers import Layer

    for twin in twins:
        data = twin.levels if twin.levels is not None else twin.data
        viewer.add_layer(Layer.create(data, dict(twin.settings), twin.kind))


def _record_open(app, beat, viewer, record, fresh, name, start, label, *,
                 file_twin: Path | None = None) -> None:
    """Time an open action, then napari adding the same layers as plain arrays in one call
    (the issue's baseline for opening: "napari's own cost of adding a plain layer of that
    size"), in the same viewer state. For multiscale layers, also napari adding the same pyramid
    levels as a plain multiscale layer, for reference (napari slices a pyramid more and renders
    once more than a single array: its own cost of what the plugin gives it). Also, for
    reference, napari adding the same arrays with the layers' own display settings
    (:func:`_add_with_settings`): what is over that is the plugin's own work. For a file
    (``file_twin``: a folder for it), also napari
    opening the same single layer from a plain ``.npy`` file with its own reader, for
    reference: ``viewer.open`` shows napari's "Opening Files" progress bar, whose update
    repaints the window (new layer included) inside the same call, for any reader."""
    record(name, "open", measure(app, beat, start))
    twins = _plain_twins(viewer)
    fresh()
    record(f"  napari, same {len(twins)} layer(s) as plain arrays: {label}", "twin",
           measure(app, beat, lambda: _add_plain(viewer, twins)))
    fresh()
    if any(twin.levels is not None for twin in twins):
        record(f"  napari, same pyramid levels as a plain multiscale layer (reference): {label}",
               "multiscale twin",
               measure(app, beat, lambda: _add_plain(viewer, twins, multiscale=True)))
        fresh()
    record(f"  napari, same arrays with the plugin's display settings (reference): {label}",
           "settings twin", measure(app, beat, lambda: _add_with_settings(viewer, twins)))
    fresh()
    if file_twin is not None and len(twins) == 1:
        kind, data, scale = twins[0].kind, twins[0].data, twins[0].scale
        npy = file_twin / f"{label.replace(' ', '_')}.npy"
        np.save(npy, data)
        record(f"  napari opens it from a plain .npy (reference): {label}", "file twin",
               measure(app, beat, lambda: viewer.open(str(npy), plugin="napari",
                                                      layer_type=kind, scale=scale) and None))
        npy.unlink()
        fresh()


def _warm_layer_types(app, viewer, fresh) -> None:
    """napari's own first Labels and Surface layer of this viewer, untimed (see "Fairness" in
    the module doc): the first Labels of a process imports pandas (~150 ms), and each
    viewer's first layer of a type builds its shaders. Without this the first open showing
    such a layer paid it and its plain twin, measured right after, never did."""
    viewer.add_labels(np.zeros((4, 4, 4), dtype=np.uint8), name="warm-up labels")
    vertices = np.array([[0, 0, 0], [0, 4, 0], [0, 0, 4], [4, 0, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    viewer.add_surface((vertices, faces), name="warm-up surface")
    for _ in range(50):
        app.processEvents()
        time.sleep(0.005)
    fresh()


def _open_files(app, beat, viewer, annotation, record, fresh) -> None:
    _warm_layer_types(app, viewer, fresh)
    for key in ("nrp1", "connectivity_158375425"):
        _record_open(app, beat, viewer, record, fresh, f"File > Open Sample: {key}",
                     lambda k=key: viewer.open_sample("napari-allen", k) and None, key)
    folder = Path(os.environ["NAPARI_ALLEN_CACHE"])

    def first_open():
        viewer.open(str(annotation), plugin="napari-allen")
        # Until the background multiscale conversion (if any) has finished and the layer shows
        # the data: freezes while it runs count too.
        return _conversions_done
    _record_open(app, beat, viewer, record, fresh,
                 "open annotation_25.nrrd (first, fresh cache, until shown)", first_open,
                 "annotation first", file_twin=folder)
    _record_open(app, beat, viewer, record, fresh, "open annotation_25.nrrd (again)",
                 lambda: viewer.open(str(annotation), plugin="napari-allen") and None,
                 "annotation again", file_twin=folder)

    def ccf_sample():
        viewer.open_sample("napari-allen", "ccf_reference_25")
        return _conversions_done
    # The CCF reference sample (the same annotation file and the brain outline): first in a
    # cache of its own (conversion in the background, until shown), then again.
    os.environ["NAPARI_ALLEN_CACHE"] = str(folder / "ccf-sample")
    try:
        _record_open(app, beat, viewer, record, fresh,
                     "File > Open Sample: ccf_reference_25 (fresh cache, until shown)",
                     ccf_sample, "ccf_reference_25 first")
        _record_open(app, beat, viewer, record, fresh,
                     "File > Open Sample: ccf_reference_25 (again)", ccf_sample,
                     "ccf_reference_25 again")
    finally:
        os.environ["NAPARI_ALLEN_CACHE"] = str(folder)


def _conversions_done() -> bool:
    from napari_allen.io.pyramid import conversions_running

    return not conversions_running()


def _connectivity(app, beat, conn, record, fresh) -> None:

    panel = conn.search_panel

    def search():
        panel.structures_edit.setText("VISp")
        panel.search_button.click()
        return lambda: _idle(*_all_runners(conn))() and len(panel.results.frame()) > 0
    record('Connectivity: search "VISp" (results arrive)', "dock", measure(app, beat, search))

    def load3():
        panel.results.select_rows([0, 1, 2])
        conn.load_tab.load_button.click()
        return _idle(*_all_runners(conn))
    record("Connectivity: load 3 experiments", "dock", measure(app, beat, load3))
    record("Connectivity: load the same 3 again (replacing their layers)", "dock",
           measure(app, beat, load3))
    fresh()


def _gene(app, beat, dock, record, fresh) -> None:
    gene, structures = dock.search_tab, dock.structures_tab

    def gene_search():
        gene.gene_edit.setText("Nrp1")
        gene.plane_combo.setCurrentText("coronal")
        gene.search()
        return lambda: _idle(*_all_runners(dock))() and len(gene.result_table.frame()) > 0
    record("Gene expression: search Nrp1", "dock", measure(app, beat, gene_search))

    def gene_load():
        gene.result_table.select_rows([0])
        gene.load_selected()
        return _idle(*_all_runners(dock))
    record("Gene expression: load Nrp1 energy", "dock", measure(app, beat, gene_load))

    def per_structure():
        structures.structure_table.set_frame(structures.structure_table.frame().iloc[0:0])
        structures.table_button.click()
        return lambda: (_idle(*_all_runners(dock))()
                        and len(structures.structure_table.frame()) > 0)
    record("Gene expression: expression per structure", "dock",
           measure(app, beat, per_structure))
    fresh()


def _spatial(app, beat, spatial, seeds, record, fresh) -> None:

    def spatial_run():
        spatial.form.seed_cap.setValue(seeds)
        spatial.form.jobs.setValue(4)
        spatial.run()
        return _idle(*_all_runners(spatial))
    record(f"Spatial search, {seeds} seeds (lines layers added)", "dock",
           measure(app, beat, spatial_run, timeout_s=600))
    record(f"Spatial search again, {seeds} seeds (replacing its layers)", "dock",
           measure(app, beat, spatial_run, timeout_s=600))
    spatial.close_search()
    fresh()


def _more(app, beat, conn, gene, record, fresh) -> None:
    """Group "more": the Connectivity dock's Average (with the individual-experiment stack,
    then grouped by AP into one stacked layer), Threshold of the mean, and the injection +
    target structure meshes; the Gene expression dock's grid annotation button, structure
    similarity and its whole plane tab (a small gene-list plane download into a store, which
    then opens as a layer; opening it again; the genes high in a structure; the genes
    correlated with the one under the slider). Inputs the local server has: the VPM
    wild-type experiments, three genes."""
    panel, load, average, threshold = (conn.search_panel, conn.load_tab, conn.average_tab,
                                       conn.threshold_tab)
    conn_idle = _idle(*_all_runners(conn))

    def search_and_load():
        # Setup, as a user would (the "connectivity" group times both): search, load one
        # experiment. The viewer's first-layer costs (dims sliders, the axes overlay's first
        # draw and glyphs: napari's, in turns) then are not charged to the averaging.
        panel.structures_edit.setText("VPM")
        panel.line_combo.setCurrentText("wild type")
        panel.search_button.click()
        loading: list = []

        def done() -> bool:
            if not conn_idle() or not len(panel.results.frame()):
                return False
            if not loading:
                loading.append(True)
                panel.results.select_rows([0])
                load.load_button.click()
                return False
            return True
        return done
    measure(app, beat, search_and_load)
    n = min(5, len(panel.results.frame()))

    def average_stack():
        panel.results.select_rows(list(range(n)))
        average.normalize_combo.setCurrentText("injection volume")
        average.group_combo.setCurrentText("none")
        average.individual_check.setChecked(True)
        average.average_button.click()
        return conn_idle
    record(f"Connectivity: average {n} experiments (+ individual stack)", "dock",
           measure(app, beat, average_stack))

    def average_grouped():
        average.individual_check.setChecked(False)
        average.group_combo.setCurrentText("AP")
        average.bins_spin.setValue(3)
        average.stack_check.setChecked(True)
        average.average_button.click()
        return conn_idle
    record(f"Connectivity: average {n}, 3 AP groups as one stack", "dock",
           measure(app, beat, average_grouped))

    def threshold_mean():
        mean = next(layer.name for layer in threshold.viewer.layers
                    if layer.name.startswith("mean projection"))
        threshold.threshold_layer_combo.setCurrentText(mean)
        threshold.target_region_edit.setText("Isocortex")
        threshold.method_combo.setCurrentText("percentile")
        threshold.threshold_value.setValue(90)
        threshold.threshold_button.click()
        return conn_idle
    record("Connectivity: threshold the mean in Isocortex", "dock",
           measure(app, beat, threshold_mean))

    def meshes():
        panel.results.select_rows([0])
        load.meshes_button.click()
        return conn_idle
    record("Connectivity: injection + target structure meshes", "dock",
           measure(app, beat, meshes, timeout_s=600))
    fresh()

    sim, plane = gene.similarity_tab, gene.plane_tab
    gene_idle = _idle(*_all_runners(gene))

    def annotation():
        gene.search_tab.annotation_button.click()
        return lambda: gene_idle() and len(gene.search_tab.viewer.layers) > 0
    record("Gene expression: add grid annotation", "dock", measure(app, beat, annotation))
    fresh()

    def similarity():
        sim.sim_mode.setCurrentText("genes")
        sim.sim_genes.setText("Nrp1 Pdyn Prox1")
        sim.sim_source.setCurrentText("grids")
        sim.top_n.setValue(40)
        sim.run_similarity()
        return gene_idle
    record("Gene expression: structure similarity, 3 genes", "dock",
           measure(app, beat, similarity))
    fresh()

    store = Path(os.environ["NAPARI_ALLEN_CACHE"]) / "plane.zarr"

    def download():
        plane.store_plane.setCurrentText("coronal")
        plane.store_genes.setText("Nrp1 Pdyn Prox1")
        plane.store_path.setText(str(store))
        plane.store_jobs.setValue(4)
        plane.download_plane()
        return lambda: gene_idle() and plane.store_layer is not None
    record("Gene expression: download 3 genes' plane store + open", "dock",
           measure(app, beat, download))
    fresh()

    def open_again():
        plane.open_button.click()
        return lambda: gene_idle() and plane.store_layer is not None
    record("Gene expression: open the plane store again", "dock",
           measure(app, beat, open_again))

    def rank():
        plane.rank_mode.setCurrentText("structure at cursor")
        plane.rank_structure.setText("CA1")
        plane.rank_genes()
        return gene_idle
    record("Gene expression: genes high in CA1 (store)", "dock", measure(app, beat, rank))

    def correlated():
        plane.correlate_current_gene()
        return gene_idle
    record("Gene expression: genes correlated with the current one", "dock",
           measure(app, beat, correlated))
    fresh()


#: CCF µm ``[AP, DV, ML]`` points in VPM and in CP (cursor moves).
_VPM_UM = (7111.0, 3977.0, 7620.0)
_CP_UM = (5100.0, 4000.0, 3300.0)


def _structures(app, beat, viewer, record, fresh) -> None:
    """The Structures dock in a cache folder of its own (fresh in every run) and with the
    process's 25 µm annotation forgotten, as in a new napari session, over a 100 µm grid
    already open: adding it (the ontology tree), typing a search one key at a time, clearing
    it, the first cursor moves (the 25 µm annotation is decoded on the first look-up in a
    fresh cache; until the row names the structure), the CCF reference, ticking a structure
    (annotation index and mesh computed), ticking one with its mask, and "Untick all" (all three
    layers removed)."""
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtTest import QTest

    from napari_allen.atlas import annotation
    from napari_allen.space import layer_space_kwargs
    from napari_allen.widgets._view import show_orientation

    folder = os.environ["NAPARI_ALLEN_CACHE"]
    os.environ["NAPARI_ALLEN_CACHE"] = str(Path(folder) / "structures")
    annotation._ccf_annotation_25.cache_clear()  # a new session has not decoded it yet
    holder: dict = {}
    # A 100 µm grid (e.g. a projection density) open before the dock, with the axes and scale
    # bar the plugin shows with its layers (their first draws are not this dock's): the
    # first look-up under the cursor needs the 25 µm annotation, not decoded yet.
    viewer.add_image(np.zeros(SMALL_SHAPE, np.float32), name="grid", **layer_space_kwargs(100))
    show_orientation(viewer)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    try:
        def add():
            holder["dock"], holder["w"] = viewer.window.add_plugin_dock_widget(
                "napari-allen", "Structures")
        record("add dock: Structures", "dock", measure(app, beat, add))
        w = holder["w"]
        busy = _idle(*_all_runners(w))

        def filtered():
            return not getattr(w, "filter_pending", False)

        def type_keys(keys: list, done: Callable[[], bool], every_ms: int = 120):
            # One key per event-loop turn, ~8 keys a second (a quick typist).
            sent = [0]

            def press():
                key = keys[sent[0]]
                if isinstance(key, str):
                    QTest.keyClicks(w.search_edit, key)
                else:
                    QTest.keyClick(w.search_edit, key[0], key[1])
                sent[0] += 1
                if sent[0] < len(keys):
                    QTimer.singleShot(every_ms, press)

            def start():
                w.search_edit.setFocus()
                press()
                return lambda: sent[0] == len(keys) and filtered() and done()
            return start

        record('Structures: type "thal" (filter per key)', "dock",
               measure(app, beat, type_keys(list("thal"), lambda: w._by_id is not None
                                            and w.item("CP").isHidden())))
        record("Structures: clear the search", "dock", measure(app, beat, type_keys(
            [(Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier),
             (Qt.Key.Key_Backspace, Qt.KeyboardModifier.NoModifier)],
            lambda: not w.item("CP").isHidden())))

        def cursor(point, acronym):
            def start():
                viewer.cursor.position = point
                return lambda: w.cursor_label.text().startswith(acronym)
            return start
        record("Structures: first cursor move (fresh cache)", "dock",
               measure(app, beat, cursor(_VPM_UM, "VPM")))
        record("Structures: next cursor move", "dock",
               measure(app, beat, cursor(_CP_UM, "CP")))

        def reference():
            w.reference_button.click()
            return lambda: busy() and _conversions_done()
        record("Structures: CCF reference + outline", "dock", measure(app, beat, reference))
        record("Structures: CCF reference again (replacing both layers)", "dock",
               measure(app, beat, reference))

        def tick(acronym, mask):
            def start():
                w.mask_check.setChecked(mask)
                w.set_checked(acronym)
                names = [f"{acronym} mesh"] + ([f"{acronym} mask"] if mask else [])
                return lambda: busy() and all(n in viewer.layers for n in names)
            return start
        record("Structures: tick VPM (index + mesh computed)", "dock",
               measure(app, beat, tick("VPM", False), timeout_s=600))
        record("Structures: tick LGd with its mask", "dock",
               measure(app, beat, tick("LGd", True), timeout_s=600))

        def clear():
            w.clear_button.click()
            return lambda: not any(name in viewer.layers
                                   for name in ("VPM mesh", "LGd mesh", "LGd mask"))
        record('Structures: "Untick all" (VPM mesh, LGd mesh + mask)', "dock",
               measure(app, beat, clear))
    finally:
        os.environ["NAPARI_ALLEN_CACHE"] = folder
        if "dock" in holder:
            in_event_loop(app, lambda: viewer.window.remove_dock_widget(holder["dock"]))
        fresh()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="fresh viewers (default 1)")
    parser.add_argument("--seeds", type=int, default=400, help="spatial-search seed cap")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="action groups to run (the baseline always runs; the docks "
                             "run unless only 'open' is chosen)")
    parser.add_argument("--first-dock", help=argparse.SUPPRESS)  # _first_docks' child
    args = parser.parse_args(argv)
    display = _ensure_display()
    if args.first_dock:
        try:
            _first_dock_child(args.first_dock)
        finally:
            if display is not None:
                display.stop()
        return 0
    try:
        rows = run(args.repeat, args.seeds, tuple(args.only))
    finally:
        if display is not None:
            display.stop()
    def freezes(runs: list[Measured]) -> list[float]:
        return [m.freeze for m in runs]

    baseline = max(statistics.median(freezes(r)) for _, kind, r in rows if kind == "baseline")
    floor = max(statistics.median(freezes(r)) for _, kind, r in rows if kind == "floor")
    n_runs = len(rows[0][2])
    gc_known = not any(np.isnan(m.freeze_without_gc) for _, _, runs in rows for m in runs)
    print(f"\n{'action':<56} {'median':>7} {'worst':>6} {'/ base':>7} {'/ layer':>8} "
          f"{'target':>10}  ok  {'CPU':>5}" + (f" {'no GC':>6}" if gc_known else ""))
    failed = checked = docks = docks_ok_without_gc = 0
    for i, (name, kind, runs) in enumerate(rows):
        median, worst = statistics.median(freezes(runs)), max(freezes(runs))
        target, ok = "", True
        if kind == "open":  # against napari adding the same layers plainly (the next row)
            twin = statistics.median(freezes(rows[i + 1][2]))
            target, ok = f"<= {twin:.0f}", median <= twin
        elif kind == "dock":
            target, ok = f"<= {DOCK_TARGET_MS:.0f}", worst <= DOCK_TARGET_MS
        elif kind in ("file twin", "multiscale twin", "settings twin"):  # reference only
            opened = statistics.median(freezes(next(r[2] for r in reversed(rows[:i])
                                                    if r[1] == "open")))
            target = f"ours {opened / median:.2f}x"
        checked += kind in ("open", "dock")
        failed += not ok
        per_layer = f"{worst / floor:8.2f}" if kind == "dock" else " " * 8
        cpu = statistics.median(m.cpu for m in runs)
        line = (f"{name:<56} {median:7.0f} {worst:6.0f} {median / baseline:7.2f} {per_layer} "
                f"{target:>10}  {'yes' if ok else 'NO ':<3} {cpu:5.0f}")
        if gc_known:
            worst_without_gc = max(m.freeze_without_gc for m in runs)
            line += f" {worst_without_gc:6.0f}"
            docks += kind == "dock"
            docks_ok_without_gc += kind == "dock" and worst_without_gc <= DOCK_TARGET_MS
        print(line)
    print(f"\n{checked - failed}/{checked} actions within target ({n_runs} run(s); dock actions "
          "judged on the worst run, opening on the median run against napari adding the same "
          "layers as plain arrays in the same runs). CPU: median main-thread CPU ms of the "
          "action and its settle time (for A/B runs on a loaded machine; not a target)")
    if gc_known:
        print(f"no GC: the action's worst freeze among those in which no full garbage "
              f"collection ran (not a target: a collection of napari's heap falls due in "
              f"whichever action allocates, see the 'full garbage collection' row); "
              f"{docks_ok_without_gc}/{docks} dock actions within {DOCK_TARGET_MS:.0f} ms so")
    return 0


if __name__ == "__main__":
    sys.exit(main())
