#!/bin/sh
# Writes the "stages" benchmark context into DIR: 1,000 source files of 16 KB
# of compressible text (a "compiler" gzips each at level 9) and 8 assets of
# 4 MB of text (gzipped at level 9 in a stage of their own): about 48 MB.
# Deterministic: the same bytes on every machine.
set -eu
dir=${1:?usage: make-context.sh DIR}
mkdir -p "$dir/assets"
prng() { head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt -pass "pass:$2" 2>/dev/null; }
text() { prng "$1" "$2" | base64 -w 0 | tr 'A-Za-z0-9+/' 'eeeettttaaaoooiinnsshhrrdlcumwfg \n\n\n\n\n\n;;{{}}(()),,==**'; }
n=1
while [ "$n" -le 1000 ]; do
  sub="$dir/src/m$(( (n - 1) / 100 + 1 ))"
  mkdir -p "$sub"
  { echo "int f$n(void);"; text 12000 "src$n"; echo; } >"$sub/f$n.c"
  n=$((n + 1))
done
for a in 1 2 3 4 5 6 7 8; do text 3000000 "asset$a" >"$dir/assets/a$a.txt"; done
