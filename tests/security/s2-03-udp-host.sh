# S2: UDP datagrams to a host listener via both gateways (the harness checks none arrived)
# expect: ok
# host-check: udp-silent
# no-audit: UDP never passes a sidecar; the harness's host listener is the witness
for i in 1 2 3; do
  echo "leak-$i" > "/dev/udp/$EGRESS_GW/$UDP_PORT" 2>/dev/null
  echo "leak-$i" > "/dev/udp/$INT_GW/$UDP_PORT" 2>/dev/null
done
exit 0
