# Two commands do everything on a fresh machine:
#   make demo   - build .venv, then run the main job (writes demo_output/index.html);
#                 make demo ARGS=--train also trains the diffusion autoencoder (~30-45 min)
#   make test   - build .venv, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch's CPU build (1.5 GB instead of 5.8)
TORCH_INDEX ?=

.PHONY: venv demo test test-fast bench pretrained clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PIP) install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(PIP) install --quiet -c constraints.txt -e ".[test,plot]"
	$(PY) -c "import torch, timm, sklearn; print('torch', torch.__version__, '| timm', timm.__version__, '| sklearn', sklearn.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) examples/demo.py --output demo_output $(ARGS)

# Tiny test models run fastest on one thread (no OpenMP contention on small CPUs).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

# Rewrites skcfx/pretrained/diffae_digits16.pt with the benchmark recipe (~20-30 min, one core).
pretrained: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/make_pretrained.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
