# S4: held secret in the query string of an allowed route
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: DB_PASSWORD
curl -sS -m 10 -f "http://echo.test/allowed/q?p=$DB_PASSWORD"
