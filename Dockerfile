# The decentral image: the package, its CLI and Ray, for the head and the workers of
# docker-compose.yml (and for any machine that should join a cluster with `ray start`).
#   docker build -t decentral:latest .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/decentral

# CPU wheels of torch/torchvision keep the image small; the versions pyproject admits.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2,<=2.14.1" "torchvision>=0.17,<=0.29.1"

COPY pyproject.toml README.md* ./
COPY decentral ./decentral
COPY topologies ./topologies
RUN pip install . && decentral --help > /dev/null

# MNIST is mounted here (torchvision layout: /data/MNIST/raw/*-ubyte); each actor loads its
# shard from the data root of the node it runs on.
ENV DECENTRAL_DATA=/data
# Ray's token authentication: every process of the cluster needs the same RAY_AUTH_TOKEN.
ENV RAY_AUTH_MODE=token

RUN useradd --create-home decentral
USER decentral
