# The README's two commands. Each creates its own virtualenv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

# The main job: the tiny PaliGemma 2 learns synthetic text lines on the CPU, then prints its metrics.
demo: $(VENV)/.installed
	NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(VENV)/bin/docvlm fit --config configs/demo.yaml

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
