# Two commands do all set-up: `make test` and `make demo` (they create .venv on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test demo clean-venv

venv:
	scripts/setup_env.sh $(VENV)

test: venv
	$(PY) -m pytest -q

demo: venv
	$(VENV)/bin/solo-ncp demo

clean-venv:
	rm -rf $(VENV)
