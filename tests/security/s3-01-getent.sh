# S3: resolve names the bundle can resolve (upstream aliases)
# expect: fail
getent hosts echo.test || getent hosts git.test || getent hosts decoy.test
