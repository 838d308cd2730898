# S3: DNS over TCP/53 to the gateways and the embedded resolver
# expect: fail
tcp "$EGRESS_GW" 53 || tcp "$INT_GW" 53
