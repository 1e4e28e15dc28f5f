# Two commands do all set-up: `make test` and `make demo` (they create .venv on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test demo clean-venv test-solo-main

venv:
	scripts/setup_env.sh $(VENV)

# PYTEST_ARGS: one pytest worker per CPU core (pytest-xdist), each test file on one worker so its
# module fixtures are made once; the 20 slowest tests are listed at the end.
PYTEST_ARGS ?= -q -n auto --dist loadfile --durations=20

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/solo-ncp demo

clean-venv:
	rm -rf $(VENV)

# The same suite on the second host, solo-learn main with Lightning 2, in its own venv.
# SOLO_LEARN_MAIN: what pip installs as solo-learn (a wheel path or this pip URL).
SOLO_LEARN_MAIN ?= solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3
VENV_MAIN ?= .venv-solo-main

test-solo-main:
	SOLO_LEARN_MAIN="$(SOLO_LEARN_MAIN)" scripts/setup_env_main.sh $(VENV_MAIN)
	SOLO_NCP_OTHER_PYTHON=$(abspath $(VENV))/bin/python $(VENV_MAIN)/bin/python -m pytest $(PYTEST_ARGS)
