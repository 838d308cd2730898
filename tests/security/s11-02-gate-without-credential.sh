# S11: fetch and push through the git gate without the bottle's access credential (the remote name alone, and a wrong credential)
# expect: fail
# audit: sidecar=git-gate decision=deny rule=access-credential
# audit-min: 3
# host-check: upstream-git-unchanged
rc=1
git ls-remote git://bundle:9418/origin.git 2>&1 && rc=0
git ls-remote git://bundle:9418/0000000000000000000000000000000000000000000000000000000000000000/origin.git 2>&1 && rc=0
cd ~ && rm -rf s11 && git init -q s11 && cd s11 && git commit -q --allow-empty -m x \
  && git push git://bundle:9418/origin.git HEAD:refs/heads/bot/s11 2>&1 && rc=0
exit $rc
