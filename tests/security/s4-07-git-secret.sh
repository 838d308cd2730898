# S4/S7: push a commit carrying the held secret to an allowed ref
# expect: fail
# audit: sidecar=git-gate decision=deny
# host-check: upstream-git-unchanged
set -e
cd ~ && rm -rf leak && git clone -q ssh://git@git.test/srv/repo.git leak && cd leak
git checkout -q -b bot/leak
echo "password=$DB_PASSWORD" > config.env && git add config.env && git commit -qm 'config'
git push origin bot/leak 2>&1
