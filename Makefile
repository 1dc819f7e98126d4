# The README's two commands. Each creates its own virtualenv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast browser java

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

# The main job: the tiny PaliGemma 2 learns synthetic text lines on the CPU, then prints its metrics.
demo: $(VENV)/.installed
	NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(VENV)/bin/docvlm fit --config configs/demo.yaml

# The report test opens hostile model output in headless Chromium. As root on Debian it is installed here;
# elsewhere that one test is skipped, with this note.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the browser test of the evaluation report will be skipped"

# The report metrics are compared with Java's PTBTokenizer (the jar pycocoevalcap ships). As root on Debian
# Java is installed here; elsewhere those comparisons are skipped, with this note.
java:
	@command -v java >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null; } || \
	  echo "java is not installed: the comparisons with Java's PTBTokenizer will be skipped"

# Everything, the `slow` runs (training, DDP, subprocesses, Chromium, the hostile corpora) included, on up to 4
# cores (pytest-xdist): CI runs this.
test: $(VENV)/.installed browser java
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15 -n auto --maxprocesses 4

# The quick loop while developing (about 1.5 minutes on 2 cores): everything but the `slow` runs, a tenth of the
# Hypothesis examples, on up to 4 cores (pytest-xdist).
test-fast: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" --hypothesis-profile fast -n auto --maxprocesses 4
