# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv/ (once) and install DeFacer into it from this checkout.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEFACER_TEST_DATA ?= $(abspath ../shared/data)
PYTEST_ARGS ?=

# slicer-core (real MRML nodes for the Slicer module's tests) pins vtk==9.6.2 and its
# libraries do not load with the newer vtk DeFacer uses, so those tests get their own venv.
SLICER_VENV ?= .venv-slicer
SLICER_BIN := $(SLICER_VENV)/bin
SLICER_PINS := "vtk==9.6.2" "slicer-core==5.13.31053.0"

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

$(SLICER_BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_BIN)/python -m pip install --quiet --upgrade pip
	$(SLICER_BIN)/python -m pip install --quiet -e ".[test]" $(SLICER_PINS)
	touch $@

## Run the whole test suite on the real data in $(DEFACER_TEST_DATA) (then the real-MRML Slicer tests)
# TensorFlow (training tests only) and Mesa's llvmpipe (offscreen rendering) crash when they
# share a process (both bring their own LLVM), so the training tests run in a process of their own.
TF_TESTS := Testing/test_face_model.py

SLICER_TESTS := Testing/test_slicer_logic.py Testing/test_slicer_batch.py Testing/test_slicer_widget_standins.py Testing/test_slicer_edges.py
TEST_LOGS := .test-logs

# The training and Slicer suites (2 minutes) run beside the main one, in processes of their own,
# and print their logs after it: the whole suite stays within 30 minutes on 2 cores.
test: $(BIN)/.installed $(SLICER_BIN)/.installed
	@rm -rf $(TEST_LOGS) && mkdir -p $(TEST_LOGS)
	@( DEFACER_TEST_DATA="$(DEFACER_TEST_DATA)" $(BIN)/python -m pytest $(TF_TESTS) $(PYTEST_ARGS) > $(TEST_LOGS)/training.log 2>&1; \
	   echo $$? > $(TEST_LOGS)/training.rc; \
	   DEFACER_TEST_DATA="$(DEFACER_TEST_DATA)" DEFACER_REQUIRE_SLICER=1 $(SLICER_BIN)/python -m pytest $(SLICER_TESTS) $(PYTEST_ARGS) > $(TEST_LOGS)/slicer.log 2>&1; \
	   echo $$? > $(TEST_LOGS)/slicer.rc ) & \
	DEFACER_TEST_DATA="$(DEFACER_TEST_DATA)" $(BIN)/python -m pytest Testing --ignore=$(TF_TESTS) $(PYTEST_ARGS); main=$$?; \
	wait; \
	for suite in training slicer; do echo "== $$suite tests"; cat $(TEST_LOGS)/$$suite.log; done; \
	echo "== exit status: main $$main, training $$(cat $(TEST_LOGS)/training.rc), slicer $$(cat $(TEST_LOGS)/slicer.rc)"; \
	[ $$main -eq 0 ] && [ "$$(cat $(TEST_LOGS)/training.rc)" = 0 ] && [ "$$(cat $(TEST_LOGS)/slicer.rc)" = 0 ] || exit $$(( main ? main : 1 ))

clean:
	rm -rf $(VENV) $(SLICER_VENV) demo_output .pytest_cache $(TEST_LOGS)
