# S4: push to an allowed ref whose name is the held secret (the name would land upstream and in the record)
# expect: fail
# audit: sidecar=git-gate decision=deny rule~held:
# host-check: upstream-git-unchanged
set -e
cd ~ && rm -rf refname && git clone -q ssh://git@git.test/srv/repo.git refname && cd refname
git push origin "HEAD:refs/heads/bot/$DB_PASSWORD" 2>&1
