# S3: raw DNS query over UDP/53 to docker's embedded resolver and to the gateways
# expect: fail
# no-audit: raw DNS involves no sidecar
q() { # query $1 for echo.test A; succeed if the reply has an answer
  exec 3<>"/dev/udp/$1/53" || return 1
  printf '\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04echo\x04test\x00\x00\x01\x00\x01' >&3
  reply=$(timeout 3 dd bs=512 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \n')
  exec 3<&-
  echo "reply from $1: ${reply:0:40}"
  [ -n "$reply" ] && [ "${reply:12:4}" != "0000" ]
}
q 127.0.0.11 || q "$INT_GW" || q "$EGRESS_GW"
