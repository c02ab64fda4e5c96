# Two entry points that do all set-up on a fresh Debian machine (Python 3.11, root, no display):
#   make demo   napari with the plugin and the bundled sample data (headless: screenshot PNG)
#   make test   ruff, the import-linter layer contracts (pyproject.toml) and the whole test
#               suite, headless under Xvfb
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_PNG ?= demo-output/napari-allen-demo.png

# Xvfb + Mesa (software OpenGL) + the X/xcb libraries Qt 6 needs. QT_QPA_PLATFORM=offscreen has
# no OpenGL and breaks the napari canvas, so tests and the headless demo run under Xvfb.
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libdbus-1-3 libfontconfig1

.PHONY: demo screenshots test lint bench system-deps install clean

demo: system-deps $(STAMP)
	@if [ -n "$$DISPLAY" ]; then \
		$(PY) -m napari_allen._demo; \
	else \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m napari_allen._demo --screenshot $(DEMO_PNG); \
	fi

# The README's images (docs/images/: the demo's 3-D and coronal views, one per dock), regenerated
# from the demo scene under Xvfb.
screenshots: system-deps $(STAMP)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m napari_allen._demo \
		--screenshot $(DEMO_PNG) --readme-images docs/images

test: system-deps $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/lint-imports
	$(VENV)/bin/npe2 validate napari-allen
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing system packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The virtual environment is rebuilt when the package metadata changes.
$(STAMP): setup.cfg pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[testing]"
	@touch $(STAMP)

install: $(STAMP)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .import_linter_cache demo-output
