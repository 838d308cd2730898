# S7: fetch a remote the bottle does not configure
# expect: fail
# audit: sidecar=git-gate decision=deny rule=unknown-remote
git ls-remote "git://bundle:9418/${BOTTLE_ACCESS_KEY:-}/other.git" 2>&1
