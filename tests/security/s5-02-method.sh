# S5: a method outside the route's methods (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# host-check: echo-untouched
h1h2 -X DELETE https://echo.test/allowed/x
