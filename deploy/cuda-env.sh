#!/bin/sh
# Puts the torch wheel's libraries and its nvidia/* CUDA libraries on the library path, then runs the command.
SITE=$(/opt/torch/bin/python -c 'import site; print(site.getsitepackages()[0])')
LD_LIBRARY_PATH="$SITE/torch/lib:$(ls -d "$SITE"/nvidia/*/lib "$SITE"/nvidia/*/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH
exec "$@"
