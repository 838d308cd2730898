# bottle agent image, template `shell`: a plain non-root shell for scripted
# agents and the demo. Builds offline: it installs nothing (the base image,
# `cargo xtask seed-base`, already has git, curl, openssh-client, bash and
# ca-certificates). The agent runs as `agent` (uid 1000) in /home/agent,
# which bottle mounts from a per-bottle volume so `resume` keeps it.
FROM {{base_image}}
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash agent \
 && mkdir -p /home/agent/workspace \
 && chown 1000:1000 /home/agent/workspace
USER 1000:1000
WORKDIR /home/agent/workspace
ENV HOME=/home/agent
CMD ["bash", "-l"]
