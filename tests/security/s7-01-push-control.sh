# S7 (control): clone through the gate and push to an allowed ref
# expect: ok
# audit: sidecar=git-gate decision=allow
set -e
cd ~ && rm -rf r && git clone -q ssh://git@git.test/srv/repo.git r && cd r
git checkout -q -b bot/ok && echo ok > ok && git add ok && git commit -qm ok
git push -q origin bot/ok 2>&1
