//! The bundle container: the sidecars, on the internal network under the
//! alias `bundle`, their files bind-mounted under `/bottle`, then connected
//! to the egress network; and its readiness check.

use bottle_core::plan::BottlePlan;
use bottle_core::prepare::BUNDLE_ROOT;
use bottle_core::{Error, Result, StateDir, Wiring};

use super::{
    bundle_config, confined, docker, labels, rm_container, step, Action, Ctx, DockerStep,
    BUNDLE_ALIAS, DEFAULT_BUNDLE_CONFIG,
};
use crate::images;

/// Create the bundle container (the operator's uid, no capabilities, its
/// limits, the sidecars' mounts only under `/bottle`) and connect it to the
/// egress network.
pub(super) fn steps(cx: &Ctx<'_>) -> Result<Vec<DockerStep>> {
    let plan = cx.plan;
    let n = &plan.names;
    let (uid, gid) = cx.opts.bundle_user;
    let limits = &cx.opts.bundle_limits;
    let mut bundle = docker()
        .args(["create", "--name", &n.bundle])
        .args(labels(plan, &cx.home, Some("bundle")))
        .args([
            "--network",
            &n.internal_network,
            "--network-alias",
            BUNDLE_ALIAS,
        ])
        .args(confined(
            BUNDLE_ALIAS,
            &format!("{uid}:{gid}"),
            limits.pids,
            limits.memory_bytes,
        ))
        .args([
            "--memory-swap",
            &limits.memory_bytes.to_string(),
            "--restart",
            "no",
            "--env",
            "HOME=/tmp",
        ]);
    for m in &cx.wiring.bundle_mounts {
        if !m.target.starts_with(BUNDLE_ROOT) {
            return Err(Error::other(
                format!(
                    "bundle mount target `{}` is outside {BUNDLE_ROOT}",
                    m.target
                ),
                "sidecar mounts belong under /bottle",
            ));
        }
        let mut spec = format!("type=bind,source={},target={}", m.host, m.target);
        if m.read_only {
            spec.push_str(",readonly");
        }
        bundle = bundle.args(["--mount", &spec]);
    }
    bundle = bundle
        .arg(&cx.images.bundle.tag)
        .arg(images::SIDECAR_IN_IMAGE);
    if cx.wiring.bundle_args.is_empty() {
        bundle = bundle.args(["run", "--config", DEFAULT_BUNDLE_CONFIG]);
    } else {
        bundle = bundle.args(cx.wiring.bundle_args.iter().cloned());
    }
    Ok(vec![
        step(
            "create bundle container",
            bundle,
            Some(rm_container(&n.bundle)),
            Action::Run,
        ),
        step(
            "connect bundle to egress network",
            docker().args(["network", "connect", &n.egress_network, &n.bundle]),
            None,
            Action::Run,
        ),
    ])
}

/// The state's `run/` dir when the bundle has it mounted read-write (where
/// it writes its readiness marker; prepare always mounts it).
pub(super) fn run_dir(wiring: &Wiring, state: &StateDir) -> Option<camino::Utf8PathBuf> {
    let run_dir = state.run_dir();
    wiring
        .bundle_mounts
        .iter()
        .any(|m| m.host == run_dir && !m.read_only)
        .then_some(run_dir)
}

/// Wait until every sidecar answers (the agent starts only then): for the
/// bundle's readiness marker in the state dir when its `run/` dir is
/// mounted (the bundle writes it once every daemon listens), with
/// `bottle-sidecar health` over `docker exec` as the slow path.
pub(super) fn readiness(plan: &BottlePlan, wiring: &Wiring, state: &StateDir) -> DockerStep {
    let n = &plan.names;
    let marker = run_dir(wiring, state).map(|_| state.bundle_ready_path());
    step(
        "wait for bundle readiness",
        docker().args([
            "exec",
            &n.bundle,
            images::SIDECAR_IN_IMAGE,
            "health",
            "--config",
            &bundle_config(wiring),
        ]),
        None,
        Action::Poll {
            container: n.bundle.clone(),
            exit_ok: false,
            marker,
        },
    )
}
