# S4: push a commit whose gpgsig header (never in a diff or the message) carries the held secret
# expect: fail
# audit: sidecar=git-gate decision=deny rule~held:
# host-check: upstream-git-unchanged
set -e
cd ~ && rm -rf hdr && git clone -q ssh://git@git.test/srv/repo.git hdr && cd hdr
c=$(printf 'tree %s\nparent %s\nauthor A <a@example.test> 1700000000 +0000\ncommitter A <a@example.test> 1700000000 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n %s\n -----END PGP SIGNATURE-----\n\nsigned\n' \
  "$(git rev-parse 'HEAD^{tree}')" "$(git rev-parse HEAD)" "$DB_PASSWORD" | git hash-object -t commit -w --stdin)
git push origin "$c:refs/heads/bot/signed" 2>&1
