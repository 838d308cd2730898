# S7: fetch a remote the bottle does not configure
# expect: fail
# audit: sidecar=git-gate decision=deny
git ls-remote git://bundle:9418/other.git 2>&1
