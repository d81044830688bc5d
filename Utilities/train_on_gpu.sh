#!/usr/bin/env bash
# Train the CT stages on a lent GPU machine (Utilities/train_all.py) and collect the results in $OUT.
#
#   Utilities/train_on_gpu.sh MINUTES [train_all.py options]
#
# Python packages that machine lacks travel in $WHEELS (default .wheels/, ignored by git): every
# *.whl is installed without an index, every *.tar.xz (a package folder repacked, for wheels too large
# to travel as they are, such as SimpleITK's) is unpacked, both into /tmp/site. A check that
# SimpleITK, MONAI and the GPU are there comes first. train_all.py runs under a time limit of MINUTES
# plus half a minute; its weights and train_all.json are copied into $OUT, or, when it was stopped,
# each run's best weights so far and the logs (logs.tgz).
set -uo pipefail
minutes=${1:?usage: train_on_gpu.sh MINUTES [train_all.py options]}
shift
out=${OUT:?set OUT to the folder for the results}
wheels=${WHEELS:-.wheels}
site=/tmp/site
mkdir -p "$site" "$out"
if [ -d "$wheels" ]; then
  if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit 3
  fi
  for t in "$wheels"/*.tar.xz; do
    [ -e "$t" ] && { tar -xJf "$t" -C "$site" || exit 3; }
  done
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY' || exit 3
import monai, SimpleITK, torch
print(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, "
      f"SimpleITK {SimpleITK.Version_VersionString()}, MONAI {monai.__version__}", flush=True)
PY
work=/tmp/train-all
limit=$(python3 -c "print(int(float('$minutes') * 60 + 30))")
timeout --signal=INT --kill-after=20 "$limit" python3 -u Utilities/train_all.py --out "$work" --minutes "$minutes" "$@"
code=$?
for f in "$work"/*_best.pt "$work"/train_all.json; do
  [ -e "$f" ] && cp "$f" "$out/"
done
if [ ! -e "$work/train_all.json" ] && [ -d "$work/runs" ]; then
  for d in "$work"/runs/*/; do
    r=$(basename "$d")
    [ -e "$d/best.pt" ] && cp "$d/best.pt" "$out/${r}_best.pt"
  done
  tar -czf "$out/logs.tgz" -C "$work" --exclude='*.pt' runs
fi
exit $code
