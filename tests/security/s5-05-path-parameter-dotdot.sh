# S5: paths that servers normalise out of the route: `..;` (Tomcat/Spring path parameters) and double-encoded dot segments (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 4
# host-check: echo-untouched
# The route allows /allowed/**; egress refuses a literal `..` segment
# (decoded once) but forwards `/allowed/..;/forbidden` and
# `/allowed/%252e%252e/forbidden` unchanged. A Java servlet upstream
# strips `;` parameters and resolves `..` (-> /forbidden); an upstream that
# decodes twice does the same with %252e. The route's path scope is then
# whatever the upstream's parser says, and the injected credential goes
# with it.
got=""
h1h2 --path-as-is 'https://echo.test/allowed/..;/forbidden' && got="$got dotdot-semicolon"
h1h2 --path-as-is 'https://echo.test/allowed/%252e%252e/forbidden' && got="$got double-encoded"
echo "forwarded:${got:- none}"
[ -n "$got" ]
