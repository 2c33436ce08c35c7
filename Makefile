PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out
# for the single-stage targets: what to run on, where, and with which pipeline
SOURCE ?= crawl-out/crawl.parquet
OUT ?= out
SHARDS ?= 64
PIPELINE ?= vidal10m

.PHONY: setup test lint demo bench bench-peer crawl generate-depth generate-infrared image clean

setup:  ## venv + every dependency (no system packages needed)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m vidal.doctor

test:  ## the whole test suite (pytest exits non-zero when no test ran)
	$(BIN)/ruff check vidal tests scripts
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check vidal tests scripts

demo:  ## offline: real sample videos + generated clips -> all stages -> shards
	$(BIN)/vidal demo --out $(DEMO_OUT)

bench:  ## throughput figures as ratios against a reference measured in the same run
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench.py --only build --runner ray
	$(BIN)/python scripts/bench_models.py
	$(BIN)/python scripts/bench_captions.py
	$(BIN)/python scripts/bench_crawl.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_scale.py

# video2dataset pins torch 2.1.2 and more that its download + resize path never calls: its own
# venv, the package without its dependencies plus those that path uses
PEER := .venv-peer
PEER_DEPS := "numpy<2" "pyarrow<19" "fire<0.6" requests ffmpeg-python yt-dlp fsspec webdataset \
	webvtt-py pandas tqdm timeout-decorator langdetect omegaconf pyyaml Pillow einops

bench-peer:  ## vidal against video2dataset 1.3.0 on the same loopback corpus, in one run
	test -x $(PEER)/bin/python || $(PY) -m venv $(PEER)
	$(PEER)/bin/python -m pip install --quiet --no-deps video2dataset==1.3.0
	$(PEER)/bin/python -m pip install --quiet $(PEER_DEPS)
	$(BIN)/python scripts/bench_peer.py --peer-python $(PEER)/bin/python

crawl:  ## search terms -> yt-dlp search -> text filters -> download (needs the network)
	test -f manifests/terms.csv || $(BIN)/vidal terms --out manifests/terms.csv
	$(BIN)/vidal crawl --terms manifests/terms.csv --out crawl-out

generate-depth:  ## depth for every clip (and the stages before it), resumable: SOURCE= OUT= SHARDS=
	$(BIN)/vidal run depth --source $(SOURCE) --out $(OUT) --shards $(SHARDS) --pipeline $(PIPELINE)

generate-infrared:  ## infrared for every clip, resumable: SOURCE= OUT= SHARDS=
	$(BIN)/vidal run infrared --source $(SOURCE) --out $(OUT) --shards $(SHARDS) --pipeline $(PIPELINE)

image:  ## the CPU image with podman, no registry needed (root, podman, mmdebstrap: docker/podman.sh)
	bash docker/podman.sh build

clean:
	rm -rf $(DEMO_OUT) bench-out crawl-out .pytest_cache
