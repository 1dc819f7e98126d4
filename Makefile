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

# $(call apt_install,PACKAGE,WHY,WITHOUT): as root on Debian, say what is installed and why, then install it with
# apt's output (debconf's notes included) kept in a log that is shown only if the install fails; elsewhere say
# what the tests will skip. WHY and WITHOUT are sentences without commas (make splits arguments on them).
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make test: installing Debian's $(1) with apt-get (a minute or two): $(2)"; \
	  log=$$(mktemp); \
	  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); } >$$log 2>&1; \
	  then rm -f $$log; else cat $$log; rm -f $$log; echo "make test: $(1) could not be installed: $(3)"; fi; \
	else echo "make test: $(1) is not installed and installing it needs root and apt-get: $(3)"; fi

# The report test opens hostile model output in headless Chromium; without it that one test is skipped.
browser:
	@command -v chromium >/dev/null || { $(call apt_install,chromium,the report test opens hostile model output in \
	  a headless browser to check that none of it runs,the browser test of the evaluation report will be skipped); }

# The report metrics are compared with Java's PTBTokenizer (the jar pycocoevalcap ships); without Java those
# comparisons are skipped.
java:
	@command -v java >/dev/null || { $(call apt_install,default-jre-headless,the radiology metrics are compared \
	  with pycocoevalcap's Java tokenizer,the comparisons with Java's PTBTokenizer will be skipped); }

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
