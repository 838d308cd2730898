//! [`SmolmachinesBackend`]: the core `Backend` for smolvm micro-VMs.
//!
//! `launch` probes first (a host that cannot boot VMs stops there, having
//! created nothing; `launch_observed` reuses the caller's probe), then runs
//! the rendered steps one after the other on the core launch engine
//! ([`bottle_core::launch`]): each undo is pushed as soon as its step
//! succeeded; on a failure or Ctrl-C (SIGINT/SIGTERM/SIGHUP) the undos run
//! newest-first through the launch's runner, a resource already gone
//! counting as removed, and the launch error lists every cleanup failure.
//! Each finished step is reported to the progress observer;
//! `BOTTLE_KEEP=1` keeps what a failed launch made.

use std::time::{Duration, Instant};

use bottle_core::backend::{
    Backend, Health, LaunchInput, LaunchScript, LogOptions, Probe, Progress, Resource, Running,
};
use bottle_core::command::{failure, CommandRunner, CommandSpec, Output};
use bottle_core::launch::{Launch, LaunchStep, Outcome, StepContext, Undo};
use bottle_core::plan::{BottlePlan, Identity};
use bottle_core::state::{Metadata, StateDir};
use bottle_core::{Error, Result};

use crate::hv::HostOs;
use crate::plan::{
    SmolNames, SmolPaths, SmolmachinesPlan, AGENT_UID, BACKEND_ID, LABEL_ALIAS, WORKSPACE,
};
use crate::probe::{probe, ProbeConfig};
use crate::render::{self, Kind, DOCKER};
use crate::smolvm::{parse_error, parse_ls, Exec, Smolvm, LABEL_BACKEND, LABEL_IDENTITY};

/// The smolmachines backend.
#[derive(Debug, Clone)]
pub struct SmolmachinesBackend {
    smolvm: Result<Smolvm, crate::smolvm::NotFound>,
    host_os: HostOs,
    kvm_device: String,
}

impl Default for SmolmachinesBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl SmolmachinesBackend {
    /// Locate smolvm (`$BOTTLE_SMOLVM` or `PATH`) on this host.
    pub fn new() -> Self {
        Self {
            smolvm: Smolvm::locate(),
            host_os: HostOs::current(),
            kvm_device: "/dev/kvm".into(),
        }
    }

    /// A backend with an explicit CLI and host family (tests, snapshots).
    pub fn with(smolvm: Smolvm, host_os: HostOs) -> Self {
        Self {
            smolvm: Ok(smolvm),
            host_os,
            kvm_device: "/dev/kvm".into(),
        }
    }

    /// The CLI to render with: the located one, else plain `smolvm` (so
    /// `--dry-run` works on hosts without it).
    pub fn cli(&self) -> Smolvm {
        self.smolvm
            .clone()
            .unwrap_or_else(|_| Smolvm::new("smolvm"))
    }

    /// The smolmachines view of a launch input.
    /// The agent's skills (README "Skills") are uploaded like the sidecars'
    /// files, one upload per file.
    pub fn plan(&self, input: LaunchInput<'_>) -> Result<SmolmachinesPlan> {
        let wiring = bottle_core::skills::with_skills(input.plan, input.wiring)?;
        SmolmachinesPlan::new(input.plan, input.state, &wiring, self.host_os)
    }

    /// The probe configuration.
    pub fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            smolvm: self.smolvm.clone(),
            host_os: self.host_os,
            kvm_device: self.kvm_device.clone(),
            boot_check: true,
            accept_host_alias: std::env::var(crate::probe::ACCEPT_HOST_ALIAS_ENV).as_deref()
                == Ok("1"),
        }
    }

    /// Run an already-probed launch (no probe): the steps with LIFO rollback.
    pub fn launch_probed(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
    ) -> Result<SmolRunning> {
        self.launch_probed_observed(input, runner, &|_, _, _, _| {})
    }

    /// [`SmolmachinesBackend::launch_probed`], reporting each finished step
    /// to `progress` (step index from 0, total, name, skipped).
    pub fn launch_probed_observed(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
        progress: Progress<'_>,
    ) -> Result<SmolRunning> {
        let p = self.plan(input)?;
        let s = self.cli();
        // what `handle` needs later; written first, so nothing the launch
        // creates is left behind by a failure to write it
        let launch = LaunchRecord {
            agent_command: p.agent_command.clone(),
        };
        bottle_core::state::atomic_write(
            &p.paths.dir.join("launch.json"),
            serde_json::to_string_pretty(&launch)
                .expect("serializes")
                .as_bytes(),
            Some(0o600),
        )?;
        let rendered = render::steps(&p, &s);
        let steps = rendered
            .iter()
            .map(|st| {
                let plan = &p;
                let step = LaunchStep::new(st.step.name.clone(), move |cx| {
                    run_step(plan, st, cx).map(|()| Outcome::Done)
                });
                match &st.step.undo {
                    Some(u) => {
                        let u = u.clone();
                        step.undo(Undo::call(move |r: &dyn CommandRunner| run_tolerant(&u, r)))
                    }
                    None => step,
                }
            })
            .collect();
        Launch::sequential(steps)
            .preserve_on_keep(input.state)
            .run(runner, progress)?;
        Ok(SmolRunning::from_plan(&p, s, Some(p.clone())))
    }
}

/// Stage the `--cwd` copy into a fresh build context: the listed files
/// only, git credentials stripped from the copy (docs/security.md S1).
fn stage_workspace(src: &camino::Utf8Path, dest: &camino::Utf8Path) -> Result<()> {
    match std::fs::remove_dir_all(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("clearing", dest.to_owned(), e)),
    }
    bottle_core::workspace::list(src)?.stage(dest)
}

/// What `handle` needs that the identity alone does not give.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LaunchRecord {
    agent_command: Vec<String>,
}

fn run_step(p: &SmolmachinesPlan, st: &render::SmolStep, cx: &StepContext<'_>) -> Result<()> {
    let runner = cx.runner;
    match st.kind {
        Kind::Run => runner.output(&st.step.run).map(|_| ()),
        Kind::BuildAgent => {
            std::fs::create_dir_all(&p.paths.empty_context)
                .map_err(|e| Error::io("creating", p.paths.empty_context.clone(), e))?;
            if let Some(src) = &p.build.workspace {
                stage_workspace(src, &p.paths.workspace_context)?;
            }
            bottle_core::state::atomic_write(
                &p.paths.dockerfile,
                p.build.dockerfile_text.as_bytes(),
                Some(0o644),
            )?;
            runner.output(&st.step.run).map(|_| ())
        }
        Kind::Poll(secs) => poll_until(&st.step.run, Duration::from_secs(secs), runner, &|| {
            cx.interrupted()
        }),
        Kind::VerifyMachine => {
            let out = runner.output(&st.step.run)?;
            verify_machine(p, &out.stdout)
        }
    }
}

/// Retry `spec` until it succeeds or `deadline` passes. Backs off from
/// 100 ms to 1 s between tries; never sleeps before the first try.
pub fn poll(spec: &CommandSpec, deadline: Duration, runner: &dyn CommandRunner) -> Result<()> {
    poll_until(spec, deadline, runner, &|| false)
}

/// [`poll`], giving up with [`Error::Interrupted`] as soon as
/// `interrupted` says so (checked between tries and during the waits).
pub fn poll_until(
    spec: &CommandSpec,
    deadline: Duration,
    runner: &dyn CommandRunner,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let start = Instant::now();
    let spec = spec.clone().allow_failure();
    let mut wait = Duration::from_millis(100);
    let mut tries = 0u32;
    let gave_up = || Error::Interrupted {
        step: format!("waiting for `{}`", spec.argv_line()),
    };
    loop {
        tries += 1;
        let out = runner.output(&spec)?;
        if out.success() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            let e = failure(&spec, &out);
            return Err(Error::other(
                format!("not ready after {tries} tries in {}s: {e}", deadline.as_secs()),
                "see `bottle logs` (and `--sidecar` for the bundle); BOTTLE_KEEP=1 keeps resources to inspect",
            ));
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if interrupted() {
                return Err(gave_up());
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        if interrupted() {
            return Err(gave_up());
        }
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Check what smolvm recorded for the new machine: the allowlist is exactly
/// the bundle's endpoint (`Addresses::agent_endpoint`), networking is on (so the allowlist is what limits it),
/// the identity label is there, and the image is the archive we saved (by
/// content digest). Any difference aborts the launch before the VM starts.
pub fn verify_machine(p: &SmolmachinesPlan, ls_json: &str) -> Result<()> {
    let machines = parse_ls(ls_json).map_err(|e| {
        Error::other(
            format!("`smolvm machine ls --json` output changed shape: {e}"),
            "upgrade bottle, or report the smolvm version",
        )
    })?;
    let m = machines
        .iter()
        .find(|m| m.name == p.machine.name)
        .ok_or_else(|| {
            Error::other(
                format!("machine `{}` missing right after create", p.machine.name),
                "retry",
            )
        })?;
    let mut got = m.allowed_cidrs.clone();
    got.sort();
    let mut want = p.machine.allow_cidrs.clone();
    want.sort();
    if got != want {
        return Err(Error::Refused {
            why: format!(
                "smolvm recorded allowlist {:?} for `{}`, expected exactly {:?}: the VM could reach more than the bundle",
                got, m.name, want
            ),
            fix: "refusing to start it; upgrade smolvm (≥ 1.8 keeps the allowlist)".into(),
        });
    }
    if m.identity() != Some(p.identity.as_str()) {
        return Err(Error::other(
            format!("machine `{}` lacks its identity label", m.name),
            "upgrade smolvm (labels need a recent release)",
        ));
    }
    let crate::smolvm::ImageSource::Archive(archive) = &p.machine.image;
    let want_image = crate::smolvm::local_image_ref(archive)
        .map_err(|e| Error::io("hashing", archive.clone(), e))?;
    if m.image.as_deref() != Some(want_image.as_str()) {
        return Err(Error::Refused {
            why: format!(
                "machine `{}` records image {:?}, not the archive just built ({want_image})",
                m.name, m.image
            ),
            fix: "refusing a stale or different image; retry the start".into(),
        });
    }
    Ok(())
}

/// Run a removal; "not found" / "no such" is success (safe to call twice).
pub fn run_tolerant(spec: &CommandSpec, runner: &dyn CommandRunner) -> Result<()> {
    let out = runner.output(&spec.clone().allow_failure())?;
    if out.success() || gone(&out) {
        Ok(())
    } else {
        Err(failure(spec, &out))
    }
}

fn gone(out: &Output) -> bool {
    if let Some(e) = parse_error(&out.stderr) {
        if crate::launch::not_found(&e) || crate::launch::not_running(&e) {
            return true;
        }
    }
    let s = out.stderr.to_ascii_lowercase();
    s.contains("no such") || s.contains("not found") || s.contains("is not running")
}

impl Backend for SmolmachinesBackend {
    fn id(&self) -> &'static str {
        BACKEND_ID
    }

    /// A micro-VM is its own kernel: no runtime choice to report.
    fn runtime_choice(&self, plan: &BottlePlan, probe: &Probe) -> (String, Vec<String>) {
        let _ = (plan, probe);
        ("vm".to_owned(), Vec::new())
    }

    fn bundle_host(&self, plan: &BottlePlan) -> String {
        // slots are bounded by the state allocation, so this cannot fail for
        // an allocated plan; fall back to slot 0's endpoint for previews
        crate::plan::bundle_host(plan, self.host_os).unwrap_or_else(|_| {
            crate::net::Addresses::for_slot(0)
                .map(|a| a.agent_endpoint(self.host_os).to_string())
                .unwrap_or_default()
        })
    }

    fn probe(&self, runner: &dyn CommandRunner) -> Probe {
        probe(&self.probe_config(), runner)
    }

    fn render(&self, input: LaunchInput<'_>) -> Result<LaunchScript> {
        Ok(render::script(&self.plan(input)?, &self.cli()))
    }

    fn launch(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
    ) -> Result<Box<dyn Running>> {
        self.launch_observed(input, runner, None, &|_, _, _, _| {})
    }

    fn launch_observed(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
        probe: Option<&Probe>,
        progress: Progress<'_>,
    ) -> Result<Box<dyn Running>> {
        let probed;
        let probe = match probe {
            Some(p) => p,
            None => {
                probed = self.probe(runner);
                &probed
            }
        };
        if let Probe::Unavailable { why, fix } = probe {
            return Err(Error::Unavailable {
                backend: BACKEND_ID.into(),
                why: why.clone(),
                fix: fix.clone(),
            });
        }
        Ok(Box::new(
            self.launch_probed_observed(input, runner, progress)?,
        ))
    }

    fn handle(&self, meta: &Metadata, state: &StateDir) -> Box<dyn Running> {
        let identity = Identity::parse(&meta.identity)
            .unwrap_or_else(|_| Identity::parse("invalid-identity").expect("literal slug"));
        let paths = SmolPaths::new(state);
        let agent_command = std::fs::read_to_string(paths.dir.join("launch.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<LaunchRecord>(&t).ok())
            .map(|r| r.agent_command)
            .unwrap_or_else(|| vec!["bash".into(), "-l".into()]);
        Box::new(SmolRunning {
            identity: identity.clone(),
            names: SmolNames::new(&identity),
            alias: crate::net::Addresses::for_slot(meta.slot)
                .map(|a| a.loopback_alias.to_string())
                .ok(),
            host_os: self.host_os,
            smolvm: self.cli(),
            agent_command,
            archive: Some(paths.archive),
            launched: None,
        })
    }

    fn labelled(&self, runner: &dyn CommandRunner) -> Result<Vec<Resource>> {
        let s = self.cli();
        let mut out = Vec::new();
        if self.smolvm.is_ok() {
            let ls = runner.output(&CommandSpec::new(&s.program).args(s.ls_args()))?;
            let machines = parse_ls(&ls.stdout).map_err(|e| {
                Error::other(
                    format!("`smolvm machine ls --json` changed shape: {e}"),
                    "upgrade bottle",
                )
            })?;
            for m in machines {
                if let Some(id) = m.identity() {
                    if m.labels.get(LABEL_BACKEND).map(String::as_str) == Some(BACKEND_ID) {
                        out.push(Resource {
                            kind: "vm".into(),
                            name: m.name.clone(),
                            identity: id.to_owned(),
                        });
                    }
                }
            }
        }
        let filter = format!("label={LABEL_BACKEND}={BACKEND_ID}");
        let fmt = format!("{{{{.Names}}}}\t{{{{.Label \"{LABEL_IDENTITY}\"}}}}");
        let ps = runner.output(
            &CommandSpec::new(DOCKER).args(["ps", "--all", "--filter", &filter, "--format", &fmt]),
        )?;
        out.extend(tab_rows(&ps.stdout, "container"));
        let fmt = format!("{{{{.Name}}}}\t{{{{.Label \"{LABEL_IDENTITY}\"}}}}");
        let nets = runner.output(
            &CommandSpec::new(DOCKER)
                .args(["network", "ls", "--filter", &filter, "--format", &fmt]),
        )?;
        out.extend(tab_rows(&nets.stdout, "network"));
        Ok(out)
    }

    fn remove_all(
        &self,
        identity: &Identity,
        _keep_home: bool,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        let r = SmolRunning {
            identity: identity.clone(),
            names: SmolNames::new(identity),
            alias: None,
            host_os: self.host_os,
            smolvm: self.cli(),
            agent_command: Vec::new(),
            archive: None,
            launched: None,
        };
        r.stop(runner)
    }
}

fn tab_rows(stdout: &str, kind: &str) -> Vec<Resource> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, id) = l.split_once('\t')?;
            (!id.trim().is_empty()).then(|| Resource {
                kind: kind.into(),
                name: name.trim().into(),
                identity: id.trim().into(),
            })
        })
        .collect()
}

/// A launched (or found) smolmachines bottle.
#[derive(Debug, Clone)]
pub struct SmolRunning {
    identity: Identity,
    names: SmolNames,
    /// The loopback alias, when known (from the slot).
    alias: Option<String>,
    host_os: HostOs,
    smolvm: Smolvm,
    agent_command: Vec<String>,
    archive: Option<camino::Utf8PathBuf>,
    /// The full plan when this process launched it (secrets for exec).
    launched: Option<SmolmachinesPlan>,
}

impl SmolRunning {
    fn from_plan(p: &SmolmachinesPlan, smolvm: Smolvm, launched: Option<SmolmachinesPlan>) -> Self {
        SmolRunning {
            identity: p.identity.clone(),
            names: p.names.clone(),
            alias: Some(p.addresses.loopback_alias.to_string()),
            host_os: p.host_os,
            smolvm,
            agent_command: p.agent_command.clone(),
            archive: Some(p.paths.archive.clone()),
            launched,
        }
    }

    fn exec_spec(&self, cmd: Vec<String>, tty: bool) -> CommandSpec {
        let exec = match &self.launched {
            Some(p) => render::agent_exec(cmd, p, tty),
            None => Exec {
                user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
                workdir: Some(WORKSPACE.into()),
                interactive: tty,
                tty,
                command: cmd,
                ..Exec::default()
            },
        };
        let mut c = CommandSpec::new(&self.smolvm.program)
            .args(self.smolvm.exec_args(&self.names.machine, &exec));
        if let Some(p) = &self.launched {
            for (k, v) in &p.secret_values {
                c = c.secret_env(k.clone(), v.clone());
            }
        }
        c
    }

    /// The teardown commands of this bottle, in order (stop → delete VM →
    /// archive → images → bundle → network → alias).
    pub fn teardown_commands(&self, runner: &dyn CommandRunner) -> Vec<(String, CommandSpec)> {
        let s = &self.smolvm;
        let n = &self.names;
        let mut v = vec![
            (
                "stop VM".to_owned(),
                CommandSpec::new(&s.program).args(s.stop_args(&n.machine, 10)),
            ),
            (
                "delete VM".to_owned(),
                CommandSpec::new(&s.program).args(s.delete_args(&n.machine)),
            ),
        ];
        if let Some(a) = &self.archive {
            v.push((
                "remove image archive".into(),
                CommandSpec::new("rm").args(["-f", a.as_str()]),
            ));
        }
        v.push((
            "remove agent image".into(),
            CommandSpec::new(DOCKER).args(["image", "rm", "--force", n.agent_image.as_str()]),
        ));
        v.push((
            "remove agent base image".into(),
            CommandSpec::new(DOCKER).args(["image", "rm", "--force", n.agent_base_image.as_str()]),
        ));
        v.push((
            "remove bundle".into(),
            CommandSpec::new(DOCKER).args(["rm", "--force", n.bundle.as_str()]),
        ));
        // the alias is recorded on the network; read it before removing it
        let alias = self.alias.clone().or_else(|| {
            if self.host_os != HostOs::Macos {
                return None;
            }
            let fmt = format!("{{{{index .Labels \"{LABEL_ALIAS}\"}}}}");
            runner
                .output(
                    &CommandSpec::new(DOCKER)
                        .args(["network", "inspect", "--format", &fmt, n.network.as_str()])
                        .allow_failure(),
                )
                .ok()
                .filter(|o| o.success())
                .map(|o| o.stdout.trim().to_owned())
                .filter(|a| !a.is_empty())
        });
        v.push((
            "remove bundle network".into(),
            CommandSpec::new(DOCKER).args(["network", "rm", n.network.as_str()]),
        ));
        if let (HostOs::Macos, Some(a)) = (self.host_os, alias) {
            v.push((
                "remove loopback alias".into(),
                CommandSpec::new("sudo").args(["-n", "ifconfig", "lo0", "-alias", a.as_str()]),
            ));
        }
        v
    }
}

impl Running for SmolRunning {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn exec(&self, cmd: &[String], runner: &dyn CommandRunner) -> Result<i32> {
        runner.interactive(&self.exec_spec(cmd.to_vec(), true))
    }

    fn exec_output(&self, cmd: &[String], runner: &dyn CommandRunner) -> Result<Output> {
        runner.output(&self.exec_spec(cmd.to_vec(), false))
    }

    fn attach(&self, runner: &dyn CommandRunner) -> Result<i32> {
        runner.interactive(&self.exec_spec(self.agent_command.clone(), true))
    }

    fn logs(&self, opts: &LogOptions, runner: &dyn CommandRunner) -> Result<i32> {
        if opts.tail.is_some() || opts.since.is_some() {
            return Err(Error::other(
                "smolvm cannot select part of a machine's log (--tail/--since)",
                "drop --tail/--since (or pipe through `tail`)",
            ));
        }
        let mut a = vec![
            "--error-format".to_owned(),
            "json".into(),
            "machine".into(),
            "logs".into(),
            "--name".into(),
            self.names.machine.clone(),
        ];
        if opts.follow {
            a.push("--follow".into());
        }
        runner.interactive(&CommandSpec::new(&self.smolvm.program).args(a))
    }

    fn health(&self, runner: &dyn CommandRunner) -> Result<Health> {
        let s = &self.smolvm;
        let ls = runner.output(
            &CommandSpec::new(&s.program)
                .args(s.ls_args())
                .allow_failure(),
        )?;
        let vm_up = parse_ls(&ls.stdout)
            .unwrap_or_default()
            .iter()
            .any(|m| m.name == self.names.machine && m.state == "running");
        let b = runner.output(
            &CommandSpec::new(DOCKER)
                .args([
                    "inspect",
                    "--format",
                    "{{.State.Running}}",
                    self.names.bundle.as_str(),
                ])
                .allow_failure(),
        )?;
        let bundle_up = b.success() && b.stdout.trim() == "true";
        Ok(match (vm_up, bundle_up) {
            (true, true) => Health::Running,
            (false, false) => Health::Stopped,
            _ => Health::Degraded,
        })
    }

    fn stop(&self, runner: &dyn CommandRunner) -> Result<()> {
        let mut errors = Vec::new();
        for (name, spec) in self.teardown_commands(runner) {
            if let Err(e) = run_tolerant(&spec, runner) {
                errors.push((name, e));
            }
        }
        bottle_core::launch::into_result(errors)
    }
}
