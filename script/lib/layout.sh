#!/usr/bin/env bash
# The house, bottom up: a folder includes only from itself and the folders below it (README, "Layout"). The fakes
# (tests/fakes) sit below the programs that embed them; their own programs (fake_*_main.cpp) are programs.
# Prints every include that runs up the house; exits 1 if there is one. Run by CTest (Layout.NoIncludeRunsUp).
cd "$(dirname "$0")/../.."
declare -A below=(
  [proto]="proto"
  [config]="config"
  [telemetry]="telemetry proto"
  [net]="net proto"
  [storage]="storage proto"
  [web]="web"
  [actors]="actors web net storage proto config telemetry"
  [service]="service actors net storage proto config telemetry"
  [loadgen]="loadgen net proto telemetry"
  [tests/fakes]="tests/fakes net proto telemetry"
  [apps]="apps loadgen tests/fakes service actors net storage proto config telemetry"
)
status=0
for folder in "${!below[@]}"; do
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "(tests\/[a-z_]+|[a-z_]+)\/.*/\1/' <<<"$line")
    allowed=" ${below[$folder]} "
    if [[ "$allowed" != *" $target "* ]]; then
      echo "$file includes from $target/, above $folder/: $line"
      status=1
    fi
  done < <(grep -rn --include='*.cpp' --include='*.hpp' -E '^#include "[a-z_]+/' "$folder" | grep -v '/fake_[a-z_]*_main\.cpp:' || true)
done
exit $status
