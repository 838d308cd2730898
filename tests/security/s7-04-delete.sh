# S7: delete an allowed ref
# expect: fail
# audit: sidecar=git-gate decision=deny
# host-check: upstream-git-unchanged
cd ~/r && git push origin :refs/heads/bot/ok 2>&1
