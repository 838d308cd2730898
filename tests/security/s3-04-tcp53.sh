# S3: DNS over TCP/53 to the gateways and the embedded resolver
# expect: fail
# no-audit: direct TCP never passes a sidecar
tcp "$EGRESS_GW" 53 || tcp "$INT_GW" 53
