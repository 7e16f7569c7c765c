#!/usr/bin/env bash
# asv smoke step for CI: the suite is importable and consistent, and one real grid point runs
# end to end through seqbench's runner (setup_cache -> a fresh worker -> every track_*).
# About 20-40 s on 2 cores. `--quick` saves nothing, so results/asv stays untouched; a saved run
# for `asv publish` is `asv run -E existing:<python> --set-commit-hash $(git rev-parse HEAD)`.
# Needs seqbench pip-installed in the interpreter asv finds (the "existing" environment never
# installs the project).
set -euo pipefail
cd "$(dirname "$0")/.."

model="${SEQBENCH_ASV_MODELS:-lstm}"
length="${SEQBENCH_ASV_LENGTHS:-32}"
log="$(mktemp -t asv-smoke.XXXXXX)"
trap 'rm -f "$log"' EXIT

python -c "import seqbench" || { echo "asv-smoke: pip install -e . first" >&2; exit 1; }
asv machine --yes >/dev/null  # without a machine file a non-interactive run exits 1
asv check -E existing
# one model at one length; every other grid point is skipped the asv way (NotImplementedError)
status=0
SEQBENCH_ASV_MODELS="$model" SEQBENCH_ASV_LENGTHS="$length" \
    asv run --quick --python=same --show-stderr --bench TrainAdding >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    cat "$log"
    echo "asv-smoke: asv run exited $status (2: a benchmark raised)" >&2
    exit "$status"
fi
# the skipped grid points print a "For parameters" line each under --show-stderr
grep -Ev 'For parameters|not selected by SEQBENCH_ASV|^[[:space:]]*$' "$log" || true
# real numbers came back for the selected point, not only skips
if ! grep -Eq "^ +${model%%,*} +[0-9]" "$log"; then
    echo "asv-smoke: no result for ${model%%,*}" >&2
    exit 1
fi
echo "asv-smoke: ok"
