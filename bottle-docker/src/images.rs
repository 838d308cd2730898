//! Images: the templates (files in `templates/`), their rendering, the build
//! contexts and the content-hash tags that make a warm start build nothing.
//!
//! Tags: `bottle-agent-<template>:<hash>` (rendered Dockerfile),
//! `bottle-ws:<hash>` (the `--cwd` layer: parent tag + file contents),
//! `bottle-sidecar:<hash>` (rendered Dockerfile + the binary's bytes). A tag
//! that exists is never rebuilt. Computing a tag only reads files.

use bottle_core::plan::{BottlePlan, ImageSource};
use bottle_core::{Error, Result, StateDir, Template};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use crate::workspace::{self, FileList};

/// uid/gid of the agent user in every built-in template.
pub const AGENT_UID: u32 = 1000;
/// The agent's home (a per-bottle volume).
pub const AGENT_HOME: &str = "/home/agent";
/// Where the `--cwd` copy lands.
pub const AGENT_WORKSPACE: &str = "/home/agent/workspace";
/// Path of the sidecar binary inside the bundle image.
pub const SIDECAR_IN_IMAGE: &str = "/usr/local/bin/bottle-sidecar";

const SHELL: &str = include_str!("../templates/shell.Dockerfile");
const CLAUDE: &str = include_str!("../templates/claude.Dockerfile");
const CODEX: &str = include_str!("../templates/codex.Dockerfile");
const BUNDLE: &str = include_str!("../templates/bundle.Dockerfile");
const WORKSPACE: &str = include_str!("../templates/workspace.Dockerfile");

/// The raw template text of a built-in agent template.
pub fn template_text(t: Template) -> &'static str {
    match t {
        Template::Shell => SHELL,
        Template::Claude => CLAUDE,
        Template::Codex => CODEX,
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// The agent Dockerfile of a template over `base`.
pub fn render_agent_template(t: Template, base: &str) -> String {
    fill(template_text(t), &[("base_image", base)])
}

/// The bundle Dockerfile for a bundle running as `uid:gid`.
pub fn render_bundle(base: &str, uid: u32, gid: u32) -> String {
    let setup = if uid == 0 {
        "true".to_owned()
    } else {
        format!(
            "(getent group {gid} >/dev/null || groupadd -o -g {gid} bottle) \
             && (getent passwd {uid} >/dev/null || useradd -o -M -d /tmp -s /bin/sh -u {uid} -g {gid} bottle)"
        )
    };
    fill(
        BUNDLE,
        &[
            ("base_image", base),
            ("user_setup", &setup),
            ("uid", &uid.to_string()),
            ("gid", &gid.to_string()),
        ],
    )
}

/// The workspace-layer Dockerfile over `agent_image`.
pub fn render_workspace(agent_image: &str) -> String {
    fill(WORKSPACE, &[("agent_image", agent_image)])
}

/// Something placed into a build context.
#[derive(Debug, Clone)]
pub enum ContextItem {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// A host file copied in (mode kept).
    Copy(Utf8PathBuf),
    /// A workspace tree copied in.
    Tree(FileList),
}

/// One image to build (skipped when its tag exists).
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// `agent`, `workspace` or `bundle`.
    pub role: &'static str,
    /// Content-hash tag.
    pub tag: String,
    /// Where the context is staged.
    pub context_dir: Utf8PathBuf,
    /// Dockerfile path (inside or outside the context).
    pub dockerfile: Utf8PathBuf,
    /// Context content (relative path → item); empty for user Dockerfiles,
    /// whose own directory is the context.
    pub items: Vec<(String, ContextItem)>,
    /// Always run `docker build` (user Dockerfiles: docker's layer cache
    /// decides), instead of skipping an existing tag.
    pub always: bool,
}

impl BuildSpec {
    /// The `docker build` command.
    pub fn command(&self) -> bottle_core::CommandSpec {
        bottle_core::CommandSpec::new("docker").args([
            "build".to_owned(),
            "--quiet".to_owned(),
            "--tag".to_owned(),
            self.tag.clone(),
            "--label".to_owned(),
            format!("dev.bottle.role={}", self.role),
            "--file".to_owned(),
            self.dockerfile.to_string(),
            self.context_dir.to_string(),
        ])
    }

    /// Write the context (Dockerfile and items) into `context_dir`.
    pub fn stage(&self) -> Result<()> {
        if self.items.is_empty() {
            return Ok(());
        }
        let dir = &self.context_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io("removing", dir.clone(), e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir.clone(), e))?;
        for (rel, item) in &self.items {
            let dst = dir.join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(|e| Error::io("creating", p.to_owned(), e))?;
            }
            match item {
                ContextItem::Bytes(b) => {
                    std::fs::write(&dst, b).map_err(|e| Error::io("writing", dst.clone(), e))?
                }
                ContextItem::Copy(src) => {
                    std::fs::copy(src, &dst).map_err(|e| Error::io("copying", src.clone(), e))?;
                }
                ContextItem::Tree(list) => list.stage(&dst)?,
            }
        }
        Ok(())
    }

    /// Remove the staged context.
    pub fn unstage(&self) {
        if !self.items.is_empty() {
            let _ = std::fs::remove_dir_all(&self.context_dir);
        }
    }
}

/// Every image of one launch.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// The base image (must exist or be pullable).
    pub base: String,
    /// Agent image from the template / Dockerfile.
    pub agent: BuildSpec,
    /// The `--cwd` layer.
    pub workspace: Option<BuildSpec>,
    /// The bundle image.
    pub bundle: BuildSpec,
}

impl ImageSet {
    /// The image the agent container runs.
    pub fn agent_image(&self) -> &str {
        match &self.workspace {
            Some(w) => &w.tag,
            None => &self.agent.tag,
        }
    }

    /// Builds in order.
    pub fn builds(&self) -> Vec<&BuildSpec> {
        let mut v = vec![&self.agent];
        v.extend(self.workspace.as_ref());
        v.push(&self.bundle);
        v
    }
}

fn short(h: impl AsRef<[u8]>) -> String {
    hex::encode(h.as_ref())[..16].to_owned()
}

/// Content hash of a (large) file, cached by (path, size, mtime) under
/// `cache_dir` so a warm start does not rehash a 200 MB debug binary.
fn sha_file_cached(path: &Utf8Path, cache_dir: &Utf8Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path.to_owned(), e))?;
    let key = hex::encode(Sha256::digest(format!(
        "{}\0{}\0{}.{}",
        path,
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )));
    let entry = cache_dir.join(format!("sha256-{}", &key[..32]));
    if let Ok(text) = std::fs::read_to_string(&entry) {
        if let Ok(bytes) = hex::decode(text.trim()) {
            if bytes.len() == 32 {
                return Ok(bytes);
            }
        }
    }
    // `sha256sum` (coreutils) is much faster than a debug build of sha2 on
    // a 200 MB binary; fall back to hashing in-process.
    let digest = match duct::cmd!("sha256sum", "--", path.as_str())
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() == 32)
            .map_or_else(|| sha_file(path), Ok)?,
        _ => sha_file(path)?,
    };
    // A cache: failing to write it only costs time.
    if std::fs::create_dir_all(cache_dir).is_ok() {
        let _ = bottle_core::state::atomic_write(&entry, hex::encode(&digest).as_bytes(), None);
    }
    Ok(digest)
}

fn sha_file(path: &Utf8Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("reading", path.to_owned(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path.to_owned(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_vec())
}

/// Test-only hook (README "Testing"): when set, a built-in template's agent
/// image is this existing image instead of the template build, so the
/// integration tests can run the claude/codex wiring with a stand-in CLI on
/// hosts without a Debian mirror or the npm registry. Not a user setting:
/// nothing but the tests sets it.
pub const TEST_AGENT_IMAGE_ENV: &str = "BOTTLE_TEST_AGENT_IMAGE";

/// The template agent image named by [`TEST_AGENT_IMAGE_ENV`], if set.
fn test_agent_image() -> Option<String> {
    std::env::var(TEST_AGENT_IMAGE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Compute every image of a plan (reads the template, the workspace and the
/// sidecar binary; runs nothing but `git ls-files`).
pub fn image_set(
    plan: &BottlePlan,
    state: &StateDir,
    sidecar_bin: &Utf8Path,
    bundle_user: (u32, u32),
) -> Result<ImageSet> {
    let base = plan.provider.base_image.clone();
    let build_root = state.path().join("build");
    let agent = match &plan.provider.image {
        ImageSource::Template(_) if test_agent_image().is_some() => {
            let tag = test_agent_image().unwrap_or_default();
            // the build runs only when the image is missing: say so
            let text = format!(
                "FROM {base}\nRUN echo '{TEST_AGENT_IMAGE_ENV} names an image that does not exist' >&2 && false\n"
            );
            let dir = build_root.join("agent");
            BuildSpec {
                role: "agent",
                tag,
                dockerfile: dir.join("Dockerfile"),
                context_dir: dir,
                items: vec![("Dockerfile".into(), ContextItem::Bytes(text.into_bytes()))],
                always: false,
            }
        }
        ImageSource::Template(t) => {
            let text = render_agent_template(*t, &base);
            let tag = format!(
                "bottle-agent-{}:{}",
                t.as_str(),
                short(Sha256::digest(&text))
            );
            let dir = build_root.join("agent");
            BuildSpec {
                role: "agent",
                tag,
                dockerfile: dir.join("Dockerfile"),
                context_dir: dir,
                items: vec![("Dockerfile".into(), ContextItem::Bytes(text.into_bytes()))],
                always: false,
            }
        }
        ImageSource::Dockerfile(path) => {
            let text = std::fs::read(path).map_err(|e| Error::io("reading", path.clone(), e))?;
            let mut h = Sha256::new();
            h.update(path.as_str());
            h.update([0]);
            h.update(&text);
            BuildSpec {
                role: "agent",
                tag: format!("bottle-agent-custom:{}", short(h.finalize())),
                dockerfile: path.clone(),
                context_dir: path
                    .parent()
                    .map(Utf8Path::to_owned)
                    .unwrap_or_else(|| ".".into()),
                items: Vec::new(),
                always: true,
            }
        }
    };
    let workspace = match &plan.workspace {
        None => None,
        Some(root) => {
            let files = workspace::list(root)?;
            let text = render_workspace(&agent.tag);
            let mut h = Sha256::new();
            h.update(&text);
            h.update([0]);
            h.update(files.hash()?);
            let dir = build_root.join("workspace");
            Some(BuildSpec {
                role: "workspace",
                tag: format!("bottle-ws:{}", short(h.finalize())),
                dockerfile: dir.join("Dockerfile"),
                context_dir: dir,
                items: vec![
                    ("Dockerfile".into(), ContextItem::Bytes(text.into_bytes())),
                    ("ws".into(), ContextItem::Tree(files)),
                ],
                always: false,
            })
        }
    };
    let text = render_bundle(&base, bundle_user.0, bundle_user.1);
    let mut h = Sha256::new();
    h.update(&text);
    h.update([0]);
    let cache = state
        .path()
        .parent()
        .map(|p| p.join(".cache"))
        .unwrap_or_else(|| build_root.join(".cache"));
    h.update(sha_file_cached(sidecar_bin, &cache)?);
    let dir = build_root.join("bundle");
    let bundle = BuildSpec {
        role: "bundle",
        tag: format!("bottle-sidecar:{}", short(h.finalize())),
        dockerfile: dir.join("Dockerfile"),
        context_dir: dir,
        items: vec![
            ("Dockerfile".into(), ContextItem::Bytes(text.into_bytes())),
            (
                "bottle-sidecar".into(),
                ContextItem::Copy(sidecar_bin.to_owned()),
            ),
        ],
        always: false,
    };
    Ok(ImageSet {
        base,
        agent,
        workspace,
        bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        insta::assert_snapshot!(
            "shell_template",
            render_agent_template(Template::Shell, bottle_core::plan::DEFAULT_BASE_IMAGE)
        );
        insta::assert_snapshot!(
            "claude_template",
            render_agent_template(Template::Claude, bottle_core::plan::DEFAULT_BASE_IMAGE)
        );
        insta::assert_snapshot!(
            "codex_template",
            render_agent_template(Template::Codex, bottle_core::plan::DEFAULT_BASE_IMAGE)
        );
        insta::assert_snapshot!(
            "bundle_template_uid1000",
            render_bundle(bottle_core::plan::DEFAULT_BASE_IMAGE, 1000, 1000)
        );
        insta::assert_snapshot!(
            "bundle_template_root",
            render_bundle(bottle_core::plan::DEFAULT_BASE_IMAGE, 0, 0)
        );
        insta::assert_snapshot!(
            "workspace_template",
            render_workspace("bottle-agent-shell:abc")
        );
        for t in [Template::Shell, Template::Claude, Template::Codex] {
            assert!(!render_agent_template(t, "x").contains("{{"));
        }
    }
}
