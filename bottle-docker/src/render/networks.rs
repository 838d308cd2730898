//! The bottle's networks and home volume.

use bottle_core::plan::BottlePlan;

use super::{docker, labels, step, Action, DockerStep};
use crate::subnet::{NetworkCreate, SubnetSettings};

/// Create the internal network (no route out, and no address of the host
/// on its bridge, so the agent cannot reach host listeners via the
/// gateway), the egress network, and the home volume. The networks' subnets
/// come from docker's pools, or from bottle's range when `subnets` says so
/// (`crate::subnet`: the rendered argv is what runs unless docker's pools
/// are exhausted or the mode is `always`).
pub(super) fn steps(plan: &BottlePlan, home: &str, subnets: SubnetSettings) -> Vec<DockerStep> {
    let n = &plan.names;
    let network = |name: &str, k: u32| {
        Action::Network(Box::new(NetworkCreate {
            name: name.to_owned(),
            settings: subnets,
            start: plan.slot.saturating_mul(2).saturating_add(k),
        }))
    };
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
            network(&n.internal_network, 0),
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
            network(&n.egress_network, 1),
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
