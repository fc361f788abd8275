# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv/ (once) and install DeFacer into it from this checkout.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEFACER_TEST_DATA ?= $(abspath ../shared/data)
PYTEST_ARGS ?=

.PHONY: demo test clean

$(BIN)/.installed: pyproject.toml
	sh scripts/install_system_deps.sh || echo "warning: Tesseract OCR is missing; DICOM --clean-pixel-data will not work"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[qa,test]"
	touch $@

## Deface the built-in synthetic head and write outputs + a QA picture to demo_output/
demo: $(BIN)/.installed
	$(BIN)/defacer demo --out demo_output --overwrite

## Run the whole test suite on the real data in $(DEFACER_TEST_DATA)
test: $(BIN)/.installed
	DEFACER_TEST_DATA="$(DEFACER_TEST_DATA)" $(BIN)/python -m pytest Testing $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
