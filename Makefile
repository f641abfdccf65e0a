# Two commands do everything from a fresh clone: `make demo` and `make test`.
# Both create .venv when absent, install vitzoo editable with what they need, and are idempotent:
# the install re-runs only when pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,detection,aigi
STAMP := $(VENV)/.installed-$(EXTRAS)
DEMO_DIR ?= runs

.PHONY: setup demo test clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		torch==2.14.1 torchvision==0.29.1 -e '.[$(EXTRAS)]'
	@touch $(STAMP)

setup: $(STAMP)

# The demo trains a small linear-attention ViT on the embedded 8x8 digits (scikit-learn, 1,797 scans, as a 32x32
# ImageFolder under $(DEMO_DIR)/data/digits), then re-evaluates the best checkpoint with tools/validate.py.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)/demo
	$(PY) -m vitzoo.cli train -c configs/demo/digits.yaml --data-dir $(DEMO_DIR)/data/digits \
		--output $(DEMO_DIR) --experiment demo
	$(PY) tools/validate.py --checkpoint $(DEMO_DIR)/demo --dataset vitzoo/digits --data-dir $(DEMO_DIR)/data/digits \
		--device cpu -j 0 --results-file $(DEMO_DIR)/demo/validate.json > /dev/null
	@$(PY) -c "import json; r = json.load(open('$(DEMO_DIR)/demo/validate.json')); \
		print(f\"tools/validate.py: top-1 {r['top1']:.2f}% on {r['images']} validation digits ({r['checkpoint']})\")"

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
