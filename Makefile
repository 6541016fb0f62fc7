# The two commands: `make demo` and `make test`. Each sets up what it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)

.PHONY: demo speech-demo test docs lint test-cuda test-k2 test-triton bench system-deps speech-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 installs from the CPU wheel on disk; newer ranges would pull CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,docs]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Debian packages the library and its tests use (graphviz's `dot` for drawing, chromium for the report test).
system-deps:
	@command -v dot >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; }
	@# headless Chromium renders the check-reader report in tests/test_viz.py
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian packages of the speech-digits recipe: synthesis (espeak-ng, flite, sox; festival with its three English
# voices, for prepare --festival-share and make speech-demo, and seven of other languages, for --foreign-share) and the reference front end (sphinx_fe).
SPEECH_PACKAGES := espeak-ng flite sox sphinxbase-utils festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	festvox-italp16k festvox-itapc16k festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita \
	festvox-czech-machac festvox-ca-ona-hts
speech-deps:
	@dpkg -s $(SPEECH_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SPEECH_PACKAGES) >/dev/null; }

lint: $(STAMP)
	$(PY) -m ruff check gtn_py recipes tests
	$(PY) -m mypy gtn_py recipes
	$(VENV)/bin/lint-imports --no-cache  # the library's floors (pyproject.toml [tool.importlinter])

# Tests run torch single-threaded: they are many small problems, for which OpenMP workers cost
# more than they give (and tests that start several processes would oversubscribe the cores).
test: $(STAMP) system-deps speech-deps lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-triton
	OMP_NUM_THREADS=1 bash tools/k2_env.sh test

# The CUDA kernels (Triton) checked without a GPU: Triton's interpreter runs their code on the CPU
# against the numba kernels (tests/test_dense.py, "interpreted"), and Triton compiles them for
# Hopper and Ampere GPUs with its own ptxas ("compile_for_cuda"). Triton, and a numpy its
# interpreter works with (< 2.4), go into a folder beside the venv's packages rather than into
# it, so that the CPU venv keeps its numpy and gtn_py there does not import Triton.
TRITON_SITE := $(VENV)/triton-site
$(TRITON_SITE)/.ready: $(STAMP)
	$(PY) -m pip install -q --target $(TRITON_SITE) --no-deps triton==3.6.0 numpy==2.2.6
	touch $@

test-triton: $(STAMP) $(TRITON_SITE)/.ready
	TRITON_INTERPRET=1 PYTHONPATH=$(TRITON_SITE) OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
		-W ignore::DeprecationWarning -W ignore::RuntimeWarning tests/test_dense.py -k interpreted
	PYTHONPATH=$(TRITON_SITE) OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_dense.py \
		-k compile_for_cuda

# k2 interop tests (tests/k2_interop), in their own Python 3.10 + torch 1.13.1 + k2 1.23.4 venv, which
# tools/k2_env.sh builds once outside the repository, in ${XDG_CACHE_HOME:-~/.cache}/gtn_py/k2-py310.
# Skipped with a message only when that cannot be built here (no package index, no Python 3.10).
test-k2:
	bash tools/k2_env.sh test

# The benchmarks whose figures BENCHMARKS.md records (k2 columns need `make test-k2` once).
bench: $(STAMP)
	$(PY) bench/graph_ops.py
	$(PY) bench/ctc.py
	$(PY) bench/align.py
	$(PY) bench/k2_scores.py
	$(PY) bench/rnnt.py
	$(PY) bench/decode.py
	$(PY) bench/backoff.py
	$(PY) bench/compile.py

# The API reference from the docstrings (pdoc) into out/docs/index.html; fails on a pdoc warning
# or a public name without a docstring.
docs: $(STAMP)
	$(PY) tools/api_docs.py --out out/docs

# CUDA cases only (on a machine with a GPU).
test-cuda: $(STAMP) system-deps
	$(PY) -m pytest -q -m cuda tests

# The speech recipe's shipped models and readings read 500 fresh utterances of held-out voices (synthesised,
# cached in out/speech_demo), the models and the default reading the same utterances spoken by festival's
# held-out voice, then all of them 31 utterances of real speakers (pip downloads pocketsphinx's source archive,
# which holds them): word error rates beside RESULTS.md's, speed, an HTML alignment report.
speech-demo: $(STAMP) speech-deps
	OMP_NUM_THREADS=1 $(PY) -m recipes.speech_digits demo --threads 1

# The main job: the shipped committee of check readers reads fresh strings of held-out digits
# (accuracy with its interval, reject curve, HTML report), then a short training run through the
# segmentation graph (recipes/check_reader/RESULTS.md has the figures).
demo: $(STAMP) system-deps
	$(PY) -m recipes.check_reader demo

clean:
	rm -rf $(VENV) out
