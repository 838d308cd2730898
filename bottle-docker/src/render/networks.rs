//! The bottle's networks and home volume.

use bottle_core::plan::BottlePlan;

use super::{docker, labels, step, Action, DockerStep};

/// Create the internal network (no route out, and no address of the host
/// on its bridge, so the agent cannot reach host listeners via the
/// gateway), the egress network, and the home volume.
pub(super) fn steps(plan: &BottlePlan, home: &str) -> Vec<DockerStep> {
    let n = &plan.names;
    let mut net = docker().args(["network", "create", "--internal"]);
    net = net.args(["--opt", "com.docker.network.bridge.inhibit_ipv4=true"]);
    net = net.args(labels(plan, home, None)).arg(&n.internal_network);
    vec![
        step(
            "create internal network",
            net,
            Some(
                docker()
                    .args(["network", "rm", &n.internal_network])
                    .allow_failure(),
            ),
            Action::Run,
        ),
        step(
            "create egress network",
            docker()
                .args(["network", "create"])
                .args(labels(plan, home, None))
                .arg(&n.egress_network),
            Some(
                docker()
                    .args(["network", "rm", &n.egress_network])
                    .allow_failure(),
            ),
            Action::Run,
        ),
        step(
            "create home volume",
            docker()
                .args(["volume", "create"])
                .args(labels(plan, home, None))
                .arg(&n.home_volume),
            Some(
                docker()
                    .args(["volume", "rm", "--force", &n.home_volume])
                    .allow_failure(),
            ),
            Action::Volume {
                name: n.home_volume.clone(),
            },
        ),
    ]
}
