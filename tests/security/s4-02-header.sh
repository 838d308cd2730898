# S4: held secret in a request header (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
# host-check: echo-untouched
h1h2 -H "X-Data: $DB_PASSWORD" https://echo.test/allowed/h
