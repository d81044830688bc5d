#!/usr/bin/env bash
# Pack the Python packages that a lent GPU machine lacks into .wheels/ for Utilities/train_on_gpu.sh.
#
#   Utilities/pack_wheels.sh            # writes .wheels/ (ignored by git)
#
# That machine's python3 (3.12) holds PyTorch, NumPy, SciPy, scikit-learn, Matplotlib and Pillow but
# neither MONAI nor SimpleITK, and nothing can be fetched there. The same versions as this checkout's
# .venv are downloaded for CPython 3.12 on manylinux x86-64: MONAI's wheel as it is, SimpleITK's
# (about 50 MB) unpacked and repacked as .tar.xz so that the tree it travels with stays within the
# 64 MiB a call may carry. train_on_gpu.sh installs *.whl and unpacks *.tar.xz into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${WHEELS:-.wheels}
py=${PYTHON:-.venv/bin/python}
version() { "$py" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
monai=$(version monai)
sitk=$(version SimpleITK)
if [ -z "$monai" ] || [ -z "$sitk" ]; then
  echo "pack_wheels: MONAI and SimpleITK must be installed in $py (make venv)" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp" "monai==$monai" "SimpleITK==$sitk"
mkdir -p "$dest"
rm -f "$dest"/*.whl "$dest"/*.tar.xz
cp "$tmp"/monai-*.whl "$dest"/
mkdir "$tmp/sitk"
"$py" -m zipfile -e "$tmp"/simpleitk-*.whl "$tmp/sitk"
tar -cJf "$dest/SimpleITK-$sitk.tar.xz" -C "$tmp/sitk" .
echo "pack_wheels: monai $monai and SimpleITK $sitk in $dest ($(du -sh "$dest" | cut -f1))"
