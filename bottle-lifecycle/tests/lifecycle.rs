//! The lifecycle over a backend that keeps its "containers" in memory:
//! what each operation leaves in the state dir and asks of the backend,
//! including the paths where nothing may be left behind (a declined
//! preflight, a failed launch, a dry run).

use std::collections::BTreeMap;
use std::sync::Mutex;

use bottle_core::backend::{
    Backend, Gvisor, Health, LaunchInput, LaunchScript, Probe, Resource, Running,
};
use bottle_core::plan::PlaceholderPrompt;
use bottle_core::state::{Metadata, Phase};
use bottle_core::{
    BottlePlan, CommandRunner, DuctRunner, Error, Home, Identity, LogOptions, Result, StateDir,
};
use bottle_lifecycle::{
    Entry, Events, GcOptions, Lifecycle, PlanRequest, Registry, Silent, Started,
};
use camino::Utf8PathBuf;

/// One fake bottle: which home labels it, whether it runs, what was asked.
#[derive(Debug, Clone, Default)]
struct Fake {
    home: String,
    running: bool,
    launches: u32,
    removed_keeping_home: u32,
}

static WORLD: Mutex<BTreeMap<String, Fake>> = Mutex::new(BTreeMap::new());

fn world(id: &str) -> Option<Fake> {
    WORLD.lock().unwrap().get(id).cloned()
}

struct Memory;

impl Backend for Memory {
    fn id(&self) -> &'static str {
        "docker"
    }
    fn probe(&self, _: &dyn CommandRunner) -> Probe {
        Probe::Ready {
            version: "memory 1".into(),
            notes: vec![],
            gvisor: Gvisor::NotApplicable,
        }
    }
    fn render(&self, _: LaunchInput<'_>) -> Result<LaunchScript> {
        Ok(LaunchScript::default())
    }
    fn launch(&self, input: LaunchInput<'_>, _: &dyn CommandRunner) -> Result<Box<dyn Running>> {
        if input.plan.agent == "failing" {
            return Err(Error::other("the engine said no", "nothing to do"));
        }
        let id = input.plan.identity.to_string();
        let home = input
            .state
            .path()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_string();
        let mut w = WORLD.lock().unwrap();
        let f = w.entry(id).or_default();
        f.home = home;
        f.running = true;
        f.launches += 1;
        Ok(Box::new(Handle(input.plan.identity.clone())))
    }
    fn handle(&self, meta: &Metadata, _: &StateDir) -> Box<dyn Running> {
        Box::new(Handle(Identity::parse(&meta.identity).unwrap()))
    }
    fn labelled(&self, _: &dyn CommandRunner) -> Result<Vec<Resource>> {
        unreachable!("gc asks labelled_in_home")
    }
    fn labelled_in_home(
        &self,
        home: &camino::Utf8Path,
        _: &dyn CommandRunner,
    ) -> Result<Vec<Resource>> {
        Ok(WORLD
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f.home == home.as_str())
            .map(|(id, _)| Resource {
                kind: "container".into(),
                name: format!("{id}-agent"),
                identity: id.clone(),
            })
            .collect())
    }
    fn remove_all(
        &self,
        identity: &Identity,
        keep_home: bool,
        _: &dyn CommandRunner,
    ) -> Result<()> {
        let mut w = WORLD.lock().unwrap();
        if keep_home {
            if let Some(f) = w.get_mut(identity.as_str()) {
                f.running = false;
                f.removed_keeping_home += 1;
            }
        } else {
            w.remove(identity.as_str());
        }
        Ok(())
    }
}

struct Handle(Identity);

impl Running for Handle {
    fn identity(&self) -> &Identity {
        &self.0
    }
    fn exec(&self, _: &[String], _: &dyn CommandRunner) -> Result<i32> {
        Ok(0)
    }
    fn exec_output(
        &self,
        _: &[String],
        _: &dyn CommandRunner,
    ) -> Result<bottle_core::command::Output> {
        unreachable!()
    }
    fn attach(&self, _: &dyn CommandRunner) -> Result<i32> {
        Ok(0)
    }
    fn logs(&self, _: &LogOptions, _: &dyn CommandRunner) -> Result<i32> {
        Ok(0)
    }
    fn health(&self, _: &dyn CommandRunner) -> Result<Health> {
        Ok(match world(self.0.as_str()) {
            Some(f) if f.running => Health::Running,
            _ => Health::Stopped,
        })
    }
    fn stop(&self, _: &dyn CommandRunner) -> Result<()> {
        if let Some(f) = WORLD.lock().unwrap().get_mut(self.0.as_str()) {
            f.running = false;
        }
        Ok(())
    }
}

fn memory() -> Box<dyn Backend> {
    Box::new(Memory)
}

static BACKENDS: &[Entry] = &[Entry {
    name: "docker",
    feature: "docker",
    make: Some(memory),
}];

/// A home with a `box` bottle and the agents `tool` and `failing`.
fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::write(
        root.join("bottles/box.toml"),
        "[agent_provider]\ntemplate = \"shell\"\n",
    )
    .unwrap();
    for agent in ["tool", "failing"] {
        std::fs::write(
            root.join(format!("agents/{agent}.toml")),
            "bottle = \"box\"\ncommand = [\"sleep\", \"infinity\"]\n",
        )
        .unwrap();
    }
    (dir, Home::new(root))
}

fn lifecycle(home: &Home) -> Lifecycle<'static> {
    Lifecycle::new(home.clone(), Registry(BACKENDS), &DuctRunner)
}

/// Records what it was told; declines the preflight when asked to.
#[derive(Default)]
struct Seen {
    decline: bool,
    preflight: Mutex<Vec<String>>,
    steps: Mutex<Vec<String>>,
}

impl Events for Seen {
    fn preflight(&self, plan: &BottlePlan, notes: &[String]) -> Result<()> {
        self.preflight
            .lock()
            .unwrap()
            .push(plan.identity.to_string());
        self.preflight.lock().unwrap().extend(notes.iter().cloned());
        if self.decline {
            return Err(Error::Refused {
                why: "declined".into(),
                fix: "say y".into(),
            });
        }
        Ok(())
    }
    fn launch_finished(&self) {
        self.steps.lock().unwrap().push("finished".into());
    }
}

fn started(s: Started) -> (Box<BottlePlan>, Box<dyn Running>) {
    match s {
        Started::Running { plan, running } => (plan, running),
        Started::DryRun { .. } => panic!("not a dry run"),
    }
}

/// `start agent` (a dry run when `dry_run`), prompts answered with
/// placeholders.
fn start(lc: &Lifecycle<'_>, agent: &str, dry_run: bool, events: &dyn Events) -> Result<Started> {
    lc.start(
        &PlanRequest::agent(agent),
        dry_run,
        &PlaceholderPrompt,
        events,
    )
}

#[test]
fn start_stop_resume_rm_leave_what_each_promises() {
    let (_d, home) = home();
    let lc = lifecycle(&home);
    let seen = Seen::default();
    let (plan, _running) = started(start(&lc, "tool", false, &seen).unwrap());
    let id = plan.identity.clone();
    // the preflight showed the identity really used, and the runtime note
    assert_eq!(seen.preflight.lock().unwrap()[0], id.to_string());
    assert!(seen
        .preflight
        .lock()
        .unwrap()
        .iter()
        .any(|n| n == "docker memory 1"));
    assert_eq!(*seen.steps.lock().unwrap(), ["finished"]);
    let state = home.state(&id);
    let meta = state.read_metadata().unwrap();
    assert_eq!(meta.phase, Phase::Running);
    assert_eq!(meta.owner_pid, None);
    assert!(state.path().join(bottle_lifecycle::PLAN_FILE).is_file());
    assert!(world(id.as_str()).unwrap().running);

    // stop: phase recorded, the backend stopped, held env values forgotten
    let held = state.secrets_dir().join("env-ANSWER");
    std::fs::write(&held, "42").unwrap();
    assert_eq!(lc.stop(&id.as_str()[..id.as_str().len() - 2]).unwrap(), id);
    assert_eq!(state.read_metadata().unwrap().phase, Phase::Stopped);
    assert!(!world(id.as_str()).unwrap().running);
    assert!(!held.exists(), "a stopped bottle keeps no held env value");
    let (rows, unreachable) = lc.list().unwrap();
    assert!(unreachable.is_none());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "stopped");

    // resume: what a crash left goes first (home kept), then a new launch
    assert_eq!(
        lc.resume(id.as_str(), &PlaceholderPrompt, &Silent).unwrap(),
        id
    );
    let f = world(id.as_str()).unwrap();
    assert!(f.running);
    assert_eq!((f.launches, f.removed_keeping_home), (2, 1));
    let meta = state.read_metadata().unwrap();
    assert_eq!((meta.phase, meta.owner_pid), (Phase::Running, None));
    let e = lc
        .resume(id.as_str(), &PlaceholderPrompt, &Silent)
        .err()
        .unwrap();
    assert!(e.to_string().contains("is already running"), "{e}");
    assert_eq!(lc.list().unwrap().0[0].state, "running");

    // rm: the backend's resources and the state dir
    assert!(lc.recorded_running(&id));
    lc.rm(id.as_str()).unwrap();
    assert!(world(id.as_str()).is_none());
    assert!(!state.path().exists());
    assert!(home.identities().unwrap().is_empty());
}

#[test]
fn a_declined_preflight_gives_the_allocation_back() {
    let (_d, home) = home();
    let seen = Seen {
        decline: true,
        ..Default::default()
    };
    let e = start(&lifecycle(&home), "tool", false, &seen)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    let shown = seen.preflight.lock().unwrap()[0].clone();
    assert!(home.identities().unwrap().is_empty());
    assert!(world(&shown).is_none(), "nothing was launched");
}

#[test]
fn a_failed_launch_leaves_no_state() {
    let (_d, home) = home();
    let seen = Seen::default();
    let e = start(&lifecycle(&home), "failing", false, &seen)
        .err()
        .unwrap();
    assert!(e.to_string().contains("the engine said no"), "{e}");
    assert_eq!(*seen.steps.lock().unwrap(), ["finished"], "progress ended");
    assert!(home.identities().unwrap().is_empty());
}

#[test]
fn a_dry_run_renders_and_removes_its_state() {
    let (_d, home) = home();
    let out = start(&lifecycle(&home), "tool", true, &Silent).unwrap();
    assert!(matches!(out, Started::DryRun { .. }));
    assert!(home.identities().unwrap().is_empty());
}

#[test]
fn gc_removes_what_a_dead_launcher_left_and_keeps_the_living() {
    let (_d, home) = home();
    let lc = lifecycle(&home);
    let (alive, _) = started(start(&lc, "tool", false, &Silent).unwrap());
    let (dead, _) = started(start(&lc, "tool", false, &Silent).unwrap());
    // the second one's launcher "died" mid-launch
    let state = home.state(&dead.identity);
    let mut meta = state.read_metadata().unwrap();
    meta.phase = Phase::Launching;
    meta.owner_pid = Some(u32::MAX - 1);
    state.write_metadata(&meta).unwrap();

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl Events for Lines {
        fn line(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_owned());
        }
    }
    let lines = Lines::default();
    let dry = GcOptions {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(lc.gc(&dry, &lines).unwrap().removed, 0);
    assert_eq!(
        *lines.0.lock().unwrap(),
        [
            format!(
                "would remove container {}-agent (its launcher died mid-launch)",
                dead.identity
            ),
            format!(
                "would remove state {} (launch never finished)",
                dead.identity
            ),
        ]
    );
    assert!(world(dead.identity.as_str()).is_some());

    let out = lc.gc(&GcOptions::default(), &Silent).unwrap();
    assert_eq!(out.removed, 1);
    assert!(world(dead.identity.as_str()).is_none());
    assert!(!state.path().exists());
    assert!(world(alive.identity.as_str()).unwrap().running);
    assert_eq!(
        home.identities().unwrap(),
        std::slice::from_ref(&alive.identity)
    );
    lc.rm(alive.identity.as_str()).unwrap();
}

#[test]
fn an_unknown_backend_override_names_the_known_ones() {
    let (_d, home) = home();
    let req = PlanRequest {
        backend: Some("nosuch".into()),
        ..PlanRequest::agent("tool")
    };
    let e = lifecycle(&home)
        .resolve(&req, None, &PlaceholderPrompt)
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "unknown backend `nosuch` (known: docker)");
}
