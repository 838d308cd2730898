# S4: held secret in a JSON body (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
# host-check: echo-untouched
h1h2 -H 'Content-Type: application/json' -d "{\"note\":\"x\",\"p\":\"$DB_PASSWORD\"}" https://echo.test/allowed/j
