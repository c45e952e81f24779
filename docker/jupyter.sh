#!/bin/sh
# Start JupyterLab on the repository's notebooks/ folder, protected by the token in $JUPYTER_TOKEN.
# The container listens on all of its interfaces; compose.yaml publishes the port on the host's
# 127.0.0.1 only. Jupyter reads the token from $JUPYTER_TOKEN itself, so it never appears in the
# process list; the URL in the logs shows it as "?token=...".
set -eu

if [ -z "${JUPYTER_TOKEN:-}" ]; then
    echo "fedbio-jupyter: JUPYTER_TOKEN is not set; refusing to start Jupyter without a token." >&2
    echo "  Set one, e.g.: export JUPYTER_TOKEN=\$(openssl rand -hex 24)   (see docker/README.md)" >&2
    exit 2
fi
if [ "${#JUPYTER_TOKEN}" -lt 16 ]; then
    echo "fedbio-jupyter: JUPYTER_TOKEN is shorter than 16 characters; use a long random one," >&2
    echo "  e.g.: export JUPYTER_TOKEN=\$(openssl rand -hex 24)" >&2
    exit 2
fi

exec jupyter lab \
    --no-browser \
    --ip=0.0.0.0 \
    --port=8888 \
    --ServerApp.root_dir="${FEDBIO_NOTEBOOKS:-/workspace/fedbio/notebooks}" \
    "$@"
