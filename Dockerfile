# Image of python-parallelism-exporter: `docker build -t python-parallelism-exporter .`
# The probes measure the Python in this image. For a free-threaded build as well, install one
# (e.g. under /opt) and list it under `interpreters:` in the config.
FROM python:3.13-slim

# A fixed non-root user; the exporter needs no privileges and writes nothing to disk.
RUN groupadd --system --gid 10001 pyparallel \
 && useradd --system --uid 10001 --gid pyparallel --no-create-home --shell /usr/sbin/nologin pyparallel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir . && rm -rf /src

COPY deploy/config.example.yml /etc/pyparallel/config.yml

USER 10001:10001
WORKDIR /
EXPOSE 9860
# Without a CPU limit the container sees the host's cores; with `cpus:`/a cgroup quota the
# exporter reports fewer usable cores (pyparallel_host_cpus{kind="usable"}).
CMD ["parallelism-exporter", "serve", "--config.file=/etc/pyparallel/config.yml"]
