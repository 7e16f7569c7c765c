#!/usr/bin/env bash
# seqbench on a multi-node Ray cluster inside one SLURM allocation: the first node runs the Ray
# head and the seqbench driver, every other node a Ray worker; each job is one Ray task on one
# GPU. Submit with `sbatch seqbench/examples/slurm-ray.sh [SPEC]` (default: the shipped
# ray-example). Needs, on every node: the same Python environment with
# `pip install 'seqbench[ray]'` (a venv on a shared filesystem), and, for real datasets, the
# data directory on a shared filesystem. Checked with `bash -n` only: no SLURM where it was written.
#SBATCH --job-name=seqbench-ray
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --output=seqbench-ray-%j.log
#SBATCH --requeue
set -euo pipefail

spec=${1:-ray-example}
out=${SEQBENCH_OUT:-$SLURM_SUBMIT_DIR/results/$spec}  # on a shared filesystem: resumable
venv=${SEQBENCH_VENV:-$HOME/venvs/seqbench}
# shellcheck disable=SC1091
source "$venv/bin/activate"
# export SEQBENCH_DATA_DIR=/shared/datasets/seqbench  # forwarded to every task by seqbench

# Inside a private allocation; Ray 2.60's token auth refused host:port connections otherwise.
export RAY_AUTH_MODE=disabled
port=6379
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
address="$head_ip:$port"
gpus=${SLURM_GPUS_PER_TASK:-0}

srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port="$port" \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --include-dashboard=false --block &
sleep 20
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$address" \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --block &
done
sleep 20

# Resumable: a requeued or resubmitted allocation re-runs only the jobs with no recorded row.
seqbench run "$spec" --executor ray --address "$address" -o "$out" --max-retries 2
seqbench validate "$out"
