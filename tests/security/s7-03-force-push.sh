# S7: non-fast-forward (force) push of an allowed ref
# expect: fail
# audit: sidecar=git-gate decision=deny
# host-check: upstream-git-unchanged
cd ~/r && git commit -q --amend -m rewritten && git push -f origin bot/ok 2>&1
