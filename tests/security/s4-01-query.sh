# S4: held secret in the query string of an allowed route (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
# host-check: echo-untouched
h1h2 "https://echo.test/allowed/q?p=$DB_PASSWORD"
