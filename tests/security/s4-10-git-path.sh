# S4: push a commit whose only trace of the held secret is a file path (empty content)
# expect: fail
# audit: sidecar=git-gate decision=deny rule~held:
# host-check: upstream-git-unchanged
set -e
cd ~ && rm -rf pth && git clone -q ssh://git@git.test/srv/repo.git pth && cd pth
git checkout -q -b bot/path
mkdir -p "x/$(dirname "$DB_PASSWORD")" && : > "x/$DB_PASSWORD" && git add -A && git commit -qm 'empty file'
git push origin bot/path 2>&1
