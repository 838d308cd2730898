# bottle bundle image: the base image + the `bottle-sidecar` binary built
# from this workspace (egress, git-gate and supervise in one process tree).
# The base already has git and openssh-client (the gate needs both); nothing
# is installed here. The bundle runs as the operator's uid so the state it
# writes (audit log, queue, git mirrors) stays the operator's; the passwd
# entry exists because ssh refuses to run for a uid without one.
FROM {{base_image}}
COPY bottle-sidecar /usr/local/bin/bottle-sidecar
RUN {{user_setup}}
USER {{uid}}:{{gid}}
ENV HOME=/tmp
CMD ["/usr/local/bin/bottle-sidecar", "--help"]
