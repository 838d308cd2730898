# S7: push to a ref outside `push`
# expect: fail
# audit: sidecar=git-gate decision=deny
# host-check: upstream-git-unchanged
cd ~/r && git push origin HEAD:refs/heads/main 2>&1
