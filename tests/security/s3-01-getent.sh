# S3: resolve names the bundle can resolve (upstream aliases)
# expect: fail
# no-audit: name resolution involves no sidecar; the agent has no resolver that answers
getent hosts echo.test || getent hosts git.test || getent hosts decoy.test
