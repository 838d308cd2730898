# S4/S7: push a commit whose tree carries the held secret as the raw object ids of two gitlinks (submodule entries need no object behind them)
# expect: fail
# audit: sidecar=git-gate decision=deny
# host-check: upstream-git-unchanged
# A gitlink (mode 160000) names a commit of another repository, so git
# never checks that it exists: its 20 bytes are free data. The gate scans
# a tree's entry names, not its entry ids, so the value leaves in the
# tree object (the receiver reads it back with `git ls-tree`).
set -e
cd ~ && rm -rf gl && git clone -q ssh://git@git.test/srv/repo.git gl && cd gl
git checkout -q -b bot/gitlink
hex=$(printf %s "$DB_PASSWORD" | od -An -tx1 -v | tr -d ' \n')
a=$(printf '%s' "$hex" | cut -c1-40)
b=$(printf '%-40s' "$(printf '%s' "$hex" | cut -c41-)" | tr ' ' 0)
git update-index --add --cacheinfo "160000,$a,vendor/a"
git update-index --add --cacheinfo "160000,$b,vendor/b"
git -c user.name=bot -c user.email=bot@test commit -qm 'vendor: pin submodules'
git push origin bot/gitlink 2>&1
