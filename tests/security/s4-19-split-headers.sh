# S4: held secret split across two headers of one request (each half alone is no match) (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny rule~dlp:held: host=echo.test
# audit-min: 2
# host-check: echo-untouched
# The receiver joins X-Part-A and X-Part-B. One request carries the whole
# value, so nothing here needs state across requests (that limit is
# documented; this one is not).
n=${#DB_PASSWORD}
a=${DB_PASSWORD:0:$((n / 2))}
b=${DB_PASSWORD:$((n / 2))}
h1h2 -H "X-Part-A: $a" -H "X-Part-B: $b" https://echo.test/allowed/split
