//! State on disk (SPEC §4): `$BOTTLE_HOME` layout, atomic writes,
//! `metadata.json`, and allocation of identities and per-bottle slots under
//! one lock.
//!
//! Owns every path under `$BOTTLE_HOME/state`. Does not know about docker or
//! VMs: backends store what they need in [`Metadata`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Identity;

/// Current `metadata.json` schema version.
pub const METADATA_SCHEMA: u32 = 1;
/// How many slots (subnets / loopback aliases) exist.
pub const MAX_SLOTS: u32 = 4096;

/// The `$BOTTLE_HOME` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: Utf8PathBuf,
}

impl Home {
    /// Use this directory as the home.
    pub fn new(root: impl Into<Utf8PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `--home`, else `$BOTTLE_HOME`, else `~/.bottle`.
    pub fn discover(flag: Option<&Utf8Path>) -> Result<Self> {
        if let Some(p) = flag {
            return Ok(Self::new(p));
        }
        if let Some(p) = std::env::var_os("BOTTLE_HOME") {
            let p = Utf8PathBuf::from_path_buf(p.into()).map_err(|p| {
                Error::other(
                    format!("BOTTLE_HOME is not UTF-8: {}", p.display()),
                    "use a UTF-8 path",
                )
            })?;
            return Ok(Self::new(p));
        }
        let home = std::env::var_os("HOME").ok_or_else(|| {
            Error::other(
                "neither BOTTLE_HOME nor HOME is set",
                "set BOTTLE_HOME or pass --home DIR",
            )
        })?;
        let home = Utf8PathBuf::from_path_buf(home.into())
            .map_err(|_| Error::other("HOME is not UTF-8", "set BOTTLE_HOME or pass --home DIR"))?;
        Ok(Self::new(home.join(".bottle")))
    }

    /// The home dir itself.
    pub fn root(&self) -> &Utf8Path {
        &self.root
    }
    /// `bottles/`: the only place bottles are read from.
    pub fn bottles_dir(&self) -> Utf8PathBuf {
        self.root.join("bottles")
    }
    /// `agents/`.
    pub fn agents_dir(&self) -> Utf8PathBuf {
        self.root.join("agents")
    }
    /// `dlp/`: the operator's extra DLP rules (gitleaks-format `*.toml`).
    pub fn dlp_dir(&self) -> Utf8PathBuf {
        self.root.join("dlp")
    }
    /// `skills/`: skill directories agents name with `skills = [...]`.
    pub fn skills_dir(&self) -> Utf8PathBuf {
        self.root.join("skills")
    }
    /// `state/`.
    pub fn state_root(&self) -> Utf8PathBuf {
        self.root.join("state")
    }
    /// The state dir of one bottle.
    pub fn state(&self, id: &Identity) -> StateDir {
        StateDir {
            path: self.state_root().join(id.as_str()),
        }
    }

    /// Identities of every state dir, sorted.
    pub fn identities(&self) -> Result<Vec<Identity>> {
        let root = self.state_root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading", root, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Some(name) = entry.file_name().to_str() {
                    if !name.starts_with('.') {
                        out.push(Identity::from_existing(name));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Take the state lock (blocks until free). Held while allocating
    /// identities, slots and aliases; released on drop.
    pub fn lock(&self) -> Result<StateLock> {
        let root = self.state_root();
        fs::create_dir_all(&root).map_err(|e| Error::io("creating", root.clone(), e))?;
        let path = root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening", path.clone(), e))?;
        file.lock_exclusive()
            .map_err(|e| Error::io("locking", path, e))?;
        Ok(StateLock { _file: file })
    }

    /// Allocate a fresh identity `<agent>-<bottle>-<random>` and create its
    /// state dir, under the lock. Two concurrent starts never get the same
    /// identity or slot.
    pub fn allocate(&self, agent: &str, bottle: &str) -> Result<(Identity, u32)> {
        let _lock = self.lock()?;
        let id = loop {
            let id = Identity::generate(agent, bottle);
            if !self.state(&id).path().exists() {
                break id;
            }
        };
        let slot = self.free_slot()?;
        let state = self.state(&id);
        state.create()?;
        atomic_write(
            &state.path().join("slot"),
            slot.to_string().as_bytes(),
            None,
        )?;
        Ok((id, slot))
    }

    fn free_slot(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self
            .identities()?
            .iter()
            .filter_map(|id| self.state(id).slot())
            .collect();
        (0..MAX_SLOTS).find(|s| !used.contains(s)).ok_or_else(|| {
            Error::other(
                "every bottle slot is taken",
                "`bottle gc` or `bottle rm` old bottles",
            )
        })
    }
}

/// The held state lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// `$BOTTLE_HOME/state/<identity>/` and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: Utf8PathBuf,
}

impl StateDir {
    /// Wrap an existing path.
    pub fn at(path: impl Into<Utf8PathBuf>) -> Self {
        Self { path: path.into() }
    }
    /// The directory.
    pub fn path(&self) -> &Utf8Path {
        &self.path
    }
    /// `metadata.json`.
    pub fn metadata_path(&self) -> Utf8PathBuf {
        self.path.join("metadata.json")
    }
    /// `ca/` (CA cert + key, key mode 600).
    pub fn ca_dir(&self) -> Utf8PathBuf {
        self.path.join("ca")
    }
    /// `access/` (the bundle access credential `access/key`, mode 600;
    /// ARCHITECTURE.md "Access credential").
    pub fn access_dir(&self) -> Utf8PathBuf {
        self.path.join("access")
    }
    /// `secrets/` (held secret values, one file each, mode 600).
    pub fn secrets_dir(&self) -> Utf8PathBuf {
        self.path.join("secrets")
    }
    /// `egress/` (holds `routes.toml`).
    pub fn egress_dir(&self) -> Utf8PathBuf {
        self.path.join("egress")
    }
    /// `egress/dlp/`: the operator's DLP rule files as copied at start.
    pub fn dlp_rules_dir(&self) -> Utf8PathBuf {
        self.egress_dir().join("dlp")
    }
    /// The home dir this state dir belongs to (`<home>/state/<id>`).
    pub fn home_root(&self) -> Option<&Utf8Path> {
        self.path.parent()?.parent()
    }
    /// `egress/routes.toml`: the live egress policy.
    pub fn routes_path(&self) -> Utf8PathBuf {
        self.egress_dir().join("routes.toml")
    }
    /// `run/`: what the running bundle tells the host (read-write in the
    /// bundle).
    pub fn run_dir(&self) -> Utf8PathBuf {
        self.path.join("run")
    }
    /// `run/bundle.ready`: written by the bundle once every daemon listens
    /// (its policy and DLP rules loaded), removed before each launch; the
    /// host waits for it instead of polling the bundle with `docker exec`
    /// (ARCHITECTURE.md "Data flow of `bottle start <agent>`").
    pub fn bundle_ready_path(&self) -> Utf8PathBuf {
        self.run_dir().join("bundle.ready")
    }
    /// `audit/` (holds `audit.jsonl`; a dir so it can be mounted).
    pub fn audit_dir(&self) -> Utf8PathBuf {
        self.path.join("audit")
    }
    /// `audit/audit.jsonl`.
    pub fn audit_path(&self) -> Utf8PathBuf {
        self.audit_dir().join("audit.jsonl")
    }
    /// `queue/`: permission requests.
    pub fn queue_dir(&self) -> Utf8PathBuf {
        self.path.join("queue")
    }
    /// `git/`: gate config and mirrors.
    pub fn git_dir(&self) -> Utf8PathBuf {
        self.path.join("git")
    }
    /// `supervise/`: supervise config and operator key.
    pub fn supervise_dir(&self) -> Utf8PathBuf {
        self.path.join("supervise")
    }
    /// `agent/`: files provisioned into the agent (git config, MCP config, prompt).
    pub fn agent_dir(&self) -> Utf8PathBuf {
        self.path.join("agent")
    }
    /// `bundle.toml`: the bundle's config.
    pub fn bundle_config_path(&self) -> Utf8PathBuf {
        self.path.join("bundle.toml")
    }
    /// `.preserve`: gc keeps this state dir.
    pub fn preserve_path(&self) -> Utf8PathBuf {
        self.path.join(".preserve")
    }

    /// Create the dir (mode 700).
    pub fn create(&self) -> Result<()> {
        create_private_dir(&self.path)
    }

    /// The allocated slot, if any.
    pub fn slot(&self) -> Option<u32> {
        fs::read_to_string(self.path.join("slot"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Read `metadata.json`; a missing or corrupt file is a clear error.
    pub fn read_metadata(&self) -> Result<Metadata> {
        let path = self.metadata_path();
        let id = self.path.file_name().unwrap_or_default().to_owned();
        let text = fs::read_to_string(&path).map_err(|e| Error::State {
            identity: id.clone(),
            why: format!("cannot read {path}: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::State {
            identity: id,
            why: format!("{path} is corrupt ({e})"),
        })
    }

    /// Write `metadata.json` atomically.
    pub fn write_metadata(&self, meta: &Metadata) -> Result<()> {
        let mut text = serde_json::to_string_pretty(meta).expect("metadata serializes");
        text.push('\n');
        atomic_write(&self.metadata_path(), text.as_bytes(), Some(0o600))
    }

    /// Whether gc must keep this dir.
    pub fn preserved(&self) -> bool {
        self.preserve_path().exists()
    }

    /// Remove the whole state dir.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", self.path.clone(), e)),
        }
    }
}

/// Lifecycle of a bottle as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `bottle start` is creating resources (its pid is `owner_pid`).
    Launching,
    /// Launched.
    Running,
    /// Stopped by `bottle stop`; resumable.
    Stopped,
}

/// `metadata.json`: everything `resume` and `gc` need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Schema version ([`METADATA_SCHEMA`]).
    pub schema_version: u32,
    /// The identity.
    pub identity: String,
    /// Agent name.
    pub agent: String,
    /// Bottle name.
    pub bottle: String,
    /// Backend id.
    pub backend: String,
    /// Runtime chosen at launch (`runc`, `runsc`, `vm`).
    pub runtime: String,
    /// Hash of the plan this bottle was launched from.
    pub plan_hash: String,
    /// Images by role (`agent`, `bundle`, …) → image id/tag.
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// The `--cwd` copied into the agent image, if any.
    pub workspace: Option<Utf8PathBuf>,
    /// Pid of the `bottle start` that is launching it (for gc).
    pub owner_pid: Option<u32>,
    /// Lifecycle phase.
    pub phase: Phase,
    /// The allocated slot (subnet/alias index).
    pub slot: u32,
    /// Approved capability requests, applied on resume.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Create a directory (and parents) with mode 700.
pub fn create_private_dir(path: &Utf8Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("creating", path.to_owned(), e))?;
    set_mode(path, 0o700)
}

/// chmod.
pub fn set_mode(path: &Utf8Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting permissions of", path.to_owned(), e))
}

/// Write `bytes` to `path` atomically, creating its parent dir: see
/// [`atomic_write_io`], the one atomic writer of the workspace (the host
/// contract in `bottle-host` and the sidecars use it too).
pub fn atomic_write(path: &Utf8Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(Utf8Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir.to_owned(), e))?;
    atomic_write_io(path.as_std_path(), bytes, mode)
        .map_err(|e| Error::io("writing", path.to_owned(), e))
}

/// Write `bytes` to `path` atomically: a temp file in the same dir, fsync,
/// chmod, rename. Readers see the old or the new content, never a mix; a
/// failure (full disk, read-only dir) leaves the old file intact and no temp
/// file behind. `mode` sets the permission bits regardless of the umask
/// (else the existing file's, else 0644). The parent dir must exist.
pub fn atomic_write_io(
    path: &std::path::Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mode = mode
        .or_else(|| {
            fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777)
        })
        .unwrap_or(0o644);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        (dir, Home::new(root))
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let (_d, home) = home();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let home = home.clone();
                std::thread::spawn(move || home.allocate("demo", "dev").unwrap())
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ids: BTreeSet<_> = got.iter().map(|(i, _)| i.as_str().to_owned()).collect();
        let slots: BTreeSet<_> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(ids.len(), 8);
        assert_eq!(slots, (0..8).collect());
        assert_eq!(home.identities().unwrap().len(), 8);
    }

    #[test]
    fn freed_slots_are_reused_and_metadata_round_trips() {
        let (_d, home) = home();
        let (a, sa) = home.allocate("a", "b").unwrap();
        let (_b, sb) = home.allocate("a", "b").unwrap();
        assert_eq!((sa, sb), (0, 1));
        home.state(&a).remove().unwrap();
        let (_c, sc) = home.allocate("a", "b").unwrap();
        assert_eq!(sc, 0);

        let st = home.state(&_b);
        let meta = Metadata {
            schema_version: METADATA_SCHEMA,
            identity: _b.as_str().into(),
            agent: "a".into(),
            bottle: "b".into(),
            backend: "docker".into(),
            runtime: "runc".into(),
            plan_hash: "abc".into(),
            images: Default::default(),
            created: "2026-01-01T00:00:00Z".into(),
            workspace: None,
            owner_pid: Some(1),
            phase: Phase::Launching,
            slot: 1,
            capabilities: vec![],
        };
        st.write_metadata(&meta).unwrap();
        assert_eq!(st.read_metadata().unwrap(), meta);
        fs::write(st.metadata_path(), "{ not json").unwrap();
        let err = st.read_metadata().unwrap_err().to_string();
        assert!(err.contains("is corrupt"), "{err}");
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_nothing_on_failure() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, home) = home();
        let p = home.root().join("x/secret");
        atomic_write(&p, b"v1", Some(0o600)).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // a read-only dir: the write fails, the old content stays, no temp left
        set_mode(p.parent().unwrap(), 0o500).unwrap();
        let r = atomic_write(&p, b"v2", None);
        set_mode(p.parent().unwrap(), 0o700).unwrap();
        if r.is_ok() {
            // root: permissions are not enforced and the write went through
            assert_eq!(fs::read(&p).unwrap(), b"v2");
        } else {
            assert_eq!(fs::read(&p).unwrap(), b"v1");
        }
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);

        // a failure root gets too: the target is a non-empty dir, so the
        // rename fails after the temp file was written; it is removed
        let dir = home.root().join("y/taken");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep"), b"kept").unwrap();
        assert!(atomic_write(&dir, b"v3", None).is_err());
        assert_eq!(fs::read(dir.join("keep")).unwrap(), b"kept");
        assert_eq!(fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);
    }
}
