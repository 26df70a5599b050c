# The two commands a new machine needs: `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test lint

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/lumbar-node demo

lint: setup
	.venv/bin/ruff check .

test: setup
	.venv/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup
