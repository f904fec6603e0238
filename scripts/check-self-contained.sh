#!/usr/bin/env bash
# The repository stands on its own: a clone with nothing beside it builds and
# passes its tests. Fails if a tracked file refers to a path outside the
# repository (a relative path that climbs out of it, from the file's folder or
# from its crate's folder, or an absolute path into this machine's work area),
# and, when the original vectors sit beside the checkout (../shared/vectors),
# if the repository's copies in vectors/ differ from them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail=0

# Folders a relative path in FILE is read from: the file's own folder and, for
# Rust code, the folder of the nearest Cargo.toml above it
# (env!("CARGO_MANIFEST_DIR")).
bases() {
    local dir
    dir=$(dirname "$1")
    echo "$dir"
    case "$1" in *.rs) ;; *) return ;; esac
    while [ "$dir" != "." ] && [ ! -f "$dir/Cargo.toml" ]; do dir=$(dirname "$dir"); done
    echo "$dir"
}

while IFS=: read -r file token; do
    for base in $(bases "$file" | sort -u); do
        resolved=$(realpath -m "$root/$base/$token")
        case "$resolved/" in
            "$root"/*) ;;
            *) echo "$file refers to $token, outside the repository (from $base/)"; fail=1 ;;
        esac
    done
done < <(git grep -I -o -E '(\.\./)+[A-Za-z0-9_.-]*' -- . ':!Cargo.lock' ':!scripts/check-self-contained.sh' | sort -u)

if git grep -I -n -E '/work/(shared|main)' -- . ':!scripts/check-self-contained.sh'; then
    echo "the lines above refer to this machine's work area"
    fail=1
fi

if [ -d ../shared/vectors ]; then
    for original in ../shared/vectors/*.json; do
        copy="vectors/$(basename "$original")"
        if ! cmp -s "$original" "$copy"; then
            echo "$copy differs from $original (or is missing): copy it again"
            fail=1
        fi
    done
    echo "vectors/ matches ../shared/vectors"
else
    echo "no ../shared/vectors beside the checkout: copies not compared"
fi

if [ "$fail" -ne 0 ]; then
    echo "the repository is not self-contained (see above)"
    exit 1
fi
echo "self-contained: no tracked file refers outside the repository"
