# Two commands do everything from a fresh clone: `make demo` and `make test`.
# Both create .venv when absent, install vitzoo editable with what they need, and are idempotent:
# the install re-runs only when pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)
DEMO_OUT ?= runs/demo

.PHONY: setup demo test clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		torch==2.14.1 torchvision==0.29.1 -e '.[$(EXTRAS)]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m vitzoo.cli list
	$(PY) -m vitzoo.cli list --mixers
	$(PY) -m vitzoo.cli bench --mixer linear softmax --dim 64 --heads 4 \
		--tokens 1024 4096 16384 --device cpu --max-seconds 3 --out $(DEMO_OUT) --name mixers

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
