#!/usr/bin/env bash
# The house, bottom up: a folder includes only from itself and the folders below it (README, "Layout").
# Prints every include that runs up the house; exits 1 if there is one. Run by CTest (Layout.NoIncludeRunsUp).
cd "$(dirname "$0")/../.."
declare -A below=(
  [proto]="proto"
  [config]="config"
  [telemetry]="telemetry proto"
  [net]="net proto"
  [storage]="storage proto"
  [actors]="actors net storage proto config telemetry"
  [service]="service actors net storage proto config telemetry"
  [apps]="apps service actors net storage proto config telemetry"
)
status=0
for folder in "${!below[@]}"; do
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$line")
    allowed=" ${below[$folder]} "
    if [[ "$allowed" != *" $target "* ]]; then
      echo "$file includes from $target/, above $folder/: $line"
      status=1
    fi
  done < <(grep -rn --include='*.cpp' --include='*.hpp' -E '^#include "[a-z_]+/' "$folder" || true)
done
exit $status
