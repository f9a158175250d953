# `make demo`: set up, then serve a tiny GLM-5 on CPU through SGLang's launch_server and ask it one chat question.
# `make test`: set up, then run the whole test suite (what CI runs).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[test]'
	$(VENV)/bin/pip check  # one version of everything: TileLang is the one sglang pins (sglang_glm5/dsa/tilelang/version.py)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/sglang-glm5 demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
