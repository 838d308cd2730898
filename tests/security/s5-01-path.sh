# S5: a path outside the route's paths (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# host-check: echo-untouched
h1h2 https://echo.test/forbidden/x
