#!/usr/bin/env bash
# ncu summaries of decode kernels (GPU machine, after scripts/device_run.sh's setup):
# `bash scripts/device_profile.sh OUTDIR`. Full reports go to OUTDIR/ncu_*.txt.
set -uo pipefail
out=${1:-.}
prof() {  # name kernel-regex args...
  local name=$1 regex=$2; shift 2
  timeout 120 ncu --clock-control none --section SpeedOfLight --section WarpStateStats \
    --section Occupancy --section LaunchStats -k "regex:$regex" -c 1 \
    python3 -m scripts.profile_decode "$@" > "$out/ncu_$name.txt" 2>&1
  echo "== $name"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Waves Per SM|Warp Cycles Per Issued|Stall|Issue Slots|Block Size|Grid Size" "$out/ncu_$name.txt" | head -24
}
prof kgemv_int4 kgemv --fmt int4-g128 --layout nk --config kgemv,1,128,128,4,4
prof dot_int4 weight_only --fmt int4-g128 --layout nk --config dot,16,128,256,1,4,1
prof dot_int8 weight_only --fmt int8 --layout nk --config dot,16,128,128,1,4,2
